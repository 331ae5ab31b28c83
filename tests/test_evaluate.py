"""`inspector evaluate`: its --json equals scikit-learn on the same predictions; bad input fails cleanly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from datasets_helpers import station_yaml, write_class_folders, write_coco
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from inspector.cli import main
from inspector.datasets import LabelledBox, tile_labels
from inspector.demo_data import write_demo_clip
from inspector.evaluation import SUMMARY_KEYS
from inspector.tiling import Tile

COCO_MAP = ["--map", "Scratch=scratch", "--map", "Spot=spot", "--map", "Crack=crack"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    """The tiny random model run once over COCO, class-folder and footage data sets."""
    root = tmp_path_factory.mktemp("evaluate")
    config = station_yaml(root / "station.yaml", tiny_model_dir)
    coco = write_coco(root / "coco", images=6, seed=1)
    folders = write_class_folders(root / "folders", per_class=2, seed=2)
    clip = write_demo_clip(root / "demo", frames=6, size=(256, 160), seed=4)
    data = ["--data", str(coco), "--data", str(folders), "--data", str(root / "demo")]
    maps = [*COCO_MAP, "--map", "missing_piece=crack"]
    verdicts, html = root / "verdicts.jsonl", root / "report.html"
    return root, config, data, maps, verdicts, html, (coco, folders, clip)


@pytest.fixture(scope="module")
def summary(evaluated) -> dict:
    root, config, data, maps, verdicts, html, _ = evaluated
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            [
                "evaluate",
                "--config",
                str(config),
                *data,
                *maps,
                "--save-verdicts",
                str(verdicts),
                "--html",
                str(html),
                "--json",
                "--no-progress",
            ]
        )
    assert code == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 1  # ONE line of JSON
    return json.loads(lines[0])


def _truth(evaluated) -> dict[tuple[str, int], tuple[list[LabelledBox], str | None]]:
    """Labels read by the test's own code: (file name, frame) -> (boxes, whole-image class)."""
    _, _, _, _, _, _, (coco, folders, clip) = evaluated
    names = {"Scratch": "scratch", "Spot": "spot", "Crack": "crack"}
    data = json.loads(coco.read_text())
    categories = {c["id"]: c["name"] for c in data["categories"]}
    truth: dict[tuple[str, int], tuple[list[LabelledBox], str | None]] = {}
    for image in data["images"]:
        boxes = [
            LabelledBox(
                names[categories[a["category_id"]]],
                (a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]),
            )
            for a in data["annotations"]
            if a["image_id"] == image["id"]
        ]
        truth[(image["file_name"], 0)] = (boxes, None)
    for file in folders.rglob("*.png"):
        truth[(file.name, 0)] = ([], file.parent.name)
    for frame in clip.labels["frames"]:
        boxes = [
            LabelledBox("crack" if d["class"] == "missing_piece" else d["class"], tuple(d["bbox"]))
            for d in frame["defects"]
        ]
        truth[(clip.video.name, frame["index"])] = (boxes, None)
    return truth


def test_json_equals_scikit_learn(evaluated, summary: dict) -> None:
    assert list(summary) == list(SUMMARY_KEYS)
    verdicts = [json.loads(line) for line in evaluated[4].read_text().splitlines()]
    truth = _truth(evaluated)
    assert len(verdicts) == len(truth) == 6 + 8 + 6
    tile_y, tile_s, frame_y, frame_s, flagged, escapes, overkill, unsure = [], [], [], [], [], 0, 0, 0
    for v in verdicts:
        boxes, whole = truth[(Path(v["source"]["id"]).name, v["source"]["frame_index"])]
        tiles = [Tile(t["index"], tuple(t["bbox"]), t["is_global"]) for t in v["tiles"]]
        labels = [whole] * len(tiles) if whole else tile_labels(boxes, tiles)
        for t, label in zip(v["tiles"], labels):
            if label is not None:
                tile_y.append(label != "ok")
                tile_s.append(1 - t["probabilities"]["ok"])
        defective = bool(boxes) or whole not in (None, "ok")
        frame_y.append(defective)
        frame_s.append(max(1 - t["probabilities"]["ok"] for t in v["tiles"]))
        flagged.append(v["verdict"] == "NG")
        escapes += defective and v["verdict"] == "OK"
        overkill += (not defective) and v["verdict"] == "NG"
        unsure += v["verdict"] == "UNCERTAIN"
    n_bad = sum(frame_y)
    assert summary["tile_auroc"] == roc_auc_score(tile_y, tile_s)
    assert summary["frame_auroc"] == roc_auc_score(frame_y, frame_s)
    expected_precision = precision_score(frame_y, flagged, zero_division=np.nan)
    if np.isnan(expected_precision):
        assert summary["frame_precision"] is None
    else:
        assert summary["frame_precision"] == expected_precision
    assert summary["frame_recall"] == recall_score(frame_y, flagged)
    assert summary["escape_rate"] == escapes / n_bad
    assert summary["overkill_rate"] == overkill / (len(frame_y) - n_bad)
    assert summary["uncertain_rate"] == unsure / len(frame_y)


def test_saved_verdicts_give_the_same_figures(evaluated, summary: dict, capsys) -> None:
    root, config, data, maps, verdicts, _, _ = evaluated
    capsys.readouterr()
    assert main(["evaluate", "--config", str(config), *data, *maps, "--verdicts", str(verdicts), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == summary


def test_html_report_of_an_evaluation(evaluated, summary: dict) -> None:
    page = evaluated[5].read_text()
    assert "randomly initialised test model" in page and "Missed defects" in page
    assert page.count("data:image/png;base64,") == 1  # the curves


def test_bad_input_fails_before_writing_anything(evaluated, tmp_path: Path, capsys) -> None:
    root, config, data, maps, _, _, (coco, _, _) = evaluated
    out = ["--save-verdicts", str(tmp_path / "v.jsonl"), "--html", str(tmp_path / "r.html")]
    assert main(["evaluate", "--config", str(config), "--data", str(coco), *out]) == 2
    err = capsys.readouterr().err
    assert re.search(r"category '(Scratch|Spot|Crack)' \(\d annotation\(s\)\) .* --map \w+=CLASS", err), err
    assert main(["evaluate", "--config", str(config), "--data", str(coco), "--map", "Scratch", *out]) == 2
    assert "is not SRC=DST" in capsys.readouterr().err
    bad_model = station_yaml(tmp_path / "s.yaml", tmp_path / "no-model")
    assert main(["evaluate", "--config", str(bad_model), "--data", str(coco), *COCO_MAP, *out]) == 2
    assert "error:" in capsys.readouterr().err
    assert not list(tmp_path.glob("v.jsonl*")) and not list(tmp_path.glob("r.html*"))
    other = write_coco(tmp_path / "other", images=2, seed=9)
    assert (
        main(["evaluate", "--config", str(config), "--data", str(other), *COCO_MAP, "--verdicts", str(evaluated[4])])
        == 2
    )
    assert "no verdict in" in capsys.readouterr().err


def test_replay_label_metrics_count_like_evaluate() -> None:
    from sklearn.metrics import confusion_matrix

    from inspector.replay import label_metrics

    verdicts = ["NG", "OK", "UNCERTAIN", "NG", "OK", "UNCERTAIN", "OK"]
    truth = ["NG", "NG", "NG", "OK", "OK", "OK", "NG"]
    outcomes = {("clip", i): v for i, v in enumerate(verdicts)} | {("other", 0): "NG"}
    metrics = label_metrics(outcomes, dict(enumerate(truth)), "clip")
    matrix = confusion_matrix(truth, verdicts, labels=["OK", "NG", "UNCERTAIN"])
    assert (metrics.true_positive, metrics.false_negative, metrics.uncertain_defective) == tuple(matrix[1, [1, 0, 2]])
    assert (metrics.false_positive, metrics.true_negative) == (matrix[0, 1], matrix[0, 0])
    assert metrics.recall == recall_score([t == "NG" for t in truth], [v == "NG" for v in verdicts])
    assert metrics.frames == 7
    assert metrics.escape_rate == 2 / 4 and metrics.overkill_rate == 1 / 3

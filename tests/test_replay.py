"""Offline replay end to end: real video decoding, the tiny model, JSONL output, resume, labels."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from inspector.cli import main
from inspector.demo_data import write_demo_clip
from inspector.payloads.verdict import json_schema

FRAMES = 4


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("replay")
    clip = write_demo_clip(root / "demo", frames=FRAMES, size=(192, 128), fps=4.0, seed=3)
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").read_text())
    config["tiling"] = {"tile": 64, "overlap": 0.25, "global_view": True}
    config["model"]["path"] = str(tiny_model_dir)
    config["inspection"]["explanation"] = "always"
    config["inspection"]["max_explanation_tokens"] = 4
    (root / "station.yaml").write_text(yaml.safe_dump(config))
    return {"config": root / "station.yaml", "clip": clip.video, "labels": clip.labels_path, "root": root}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _replay(station: dict[str, Path], out: Path, *extra: str) -> int:
    return main(
        ["replay", str(station["clip"]), "--config", str(station["config"]), "--out", str(out), "--no-progress", *extra]
    )


def test_replay_writes_valid_verdicts_labelled_random(station, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.jsonl"
    assert _replay(station, out, "--labels", str(station["labels"])) == 0
    lines = _lines(out)
    assert [line["source"]["frame_index"] for line in lines] == list(range(FRAMES))
    schema = json_schema()
    for line in lines:
        jsonschema.validate(line, schema)
        assert line["model"]["random_weights"] is True
        assert line["tiles"][-1]["is_global"] is True
        assert all(t["explanation"] is not None for t in line["tiles"])
    err = capsys.readouterr().err
    assert "RANDOM" in err and "precision / recall" in err


def test_replay_summary_prints_what_the_model_said_about_ng_frames(station, tmp_path: Path, capsys) -> None:
    config = yaml.safe_load(station["config"].read_text())
    for rule in config["inspection"]["defects"].values():
        rule["threshold"] = 0.01  # every frame NG: each gets its words
    config["inspection"]["explanation"] = "defects"
    path = tmp_path / "eager.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "results.jsonl"
    assert main(["replay", str(station["clip"]), "--config", str(path), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "what the model said about NG frames" in err and "RANDOM model: meaningless" in err
    lines = _lines(out)
    assert all(line["verdict"] == "NG" for line in lines)
    for line in lines:
        best = max(line["defects"], key=lambda d: d["confidence"])
        assert f"frame {line['source']['frame_index']}: {best['class']}" in err
        assert " ".join(best["explanation"].split())[:20] in " ".join(err.split())


def test_replay_resumes_without_duplicates(station, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    assert _replay(station, out, "--limit", "2") == 0
    first = _lines(out)
    assert len(first) == 2
    with out.open("a") as handle:  # a writer killed mid-line
        handle.write('{"schema": "line-inspector/frame-ver')
    assert _replay(station, out) == 0
    lines = _lines(out)
    assert [line["source"]["frame_index"] for line in lines] == list(range(FRAMES))
    assert lines[:2] == first  # the judged frames were kept, not redone


def test_missing_source_fails_before_model_loads(station, tmp_path: Path, capsys) -> None:
    code = main(["replay", str(tmp_path / "nope.mp4"), "--config", str(station["config"]), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope.mp4" in err and "Traceback" not in err and "loading model" not in err


def test_corrupt_video_is_a_clear_error(station, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    assert main(["replay", str(bad), "--config", str(station["config"]), "--no-progress"]) == 2
    assert "bad.mp4" in capsys.readouterr().err


def test_missing_model_directory_names_the_fix(station, tmp_path: Path, capsys) -> None:
    code = _replay(station, tmp_path / "r.jsonl", "--model", str(tmp_path / "no-model"))
    assert code == 2
    assert "inspector model tiny" in capsys.readouterr().err


# -- the error policy: a frame that fails gets an UNCERTAIN verdict carrying the error -----------


@pytest.fixture(scope="module")
def mixed_sizes(station, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three images; the middle one is too small for the ROI, so inspecting it really raises."""
    import cv2
    import numpy as np

    root = tmp_path_factory.mktemp("mixed")
    (root / "frames").mkdir()
    rng = np.random.default_rng(0)
    for name, (width, height) in (("1.png", (192, 128)), ("2.png", (96, 96)), ("3.png", (192, 128))):
        cv2.imwrite(str(root / "frames" / name), rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    config = yaml.safe_load(station["config"].read_text())
    config["tiling"]["roi"] = {"rect": [128, 0, 192, 64]}  # right of the 96-px image
    (root / "station.yaml").write_text(yaml.safe_dump(config))
    return {"config": root / "station.yaml", "frames": root / "frames"}


def _replay_mixed(mixed: dict[str, Path], out: Path, *extra: str) -> int:
    return main(["replay", str(mixed["frames"]), "-c", str(mixed["config"]), "-o", str(out), "--no-progress", *extra])


def test_a_failed_frame_is_uncertain_with_its_error_and_the_exit_code_says_so(mixed_sizes, tmp_path, capsys) -> None:
    out = tmp_path / "r.jsonl"
    assert _replay_mixed(mixed_sizes, out) == 1
    lines = _lines(out)
    assert [line["source"]["frame_index"] for line in lines] == [0, 1, 2]  # every frame has its verdict
    failed = lines[1]
    assert failed["verdict"] == "UNCERTAIN" and failed["confidence"] == 0.0
    assert "ROI rect" in failed["error"] and "96x96" in failed["error"]
    assert lines[0].get("error") is None and lines[2].get("error") is None
    for line in lines:
        jsonschema.validate(line, json_schema())
    err = capsys.readouterr().err
    assert "could not be inspected" in err and "frame 1" in err and "Traceback" not in err


def test_fail_fast_writes_the_failed_frame_then_stops(mixed_sizes, tmp_path, capsys) -> None:
    out = tmp_path / "r.jsonl"
    assert _replay_mixed(mixed_sizes, out, "--fail-fast") == 1
    lines = _lines(out)
    assert [line["source"]["frame_index"] for line in lines] == [0, 1]
    assert "ROI rect" in lines[1]["error"]
    assert "--fail-fast" in capsys.readouterr().err
    # Resuming without --fail-fast judges only what is left (the failed frame keeps its verdict).
    assert _replay_mixed(mixed_sizes, out) == 0
    assert [line["source"]["frame_index"] for line in _lines(out)] == [0, 1, 2]

"""`inspector calibrate`: the chosen thresholds meet the escape bound on their data, and report held-out figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets_helpers import station_yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.cli import main
from inspector.config import InspectionConfig, load_config
from inspector.datasets import LabelledBox, LabelledImage
from inspector.evaluation import Prediction, evaluate
from inspector.evaluation.calibrate import calibrate, reaggregate

DEFECTS = ("scratch", "spot", "crack")
CLASSES = ("ok", *DEFECTS)
INSPECTION = InspectionConfig(
    product="p", defects={c: {"description": c, "threshold": 0.5} for c in DEFECTS}, uncertain_band=0.15
)


def _prediction(i: int, truth: str, tiles: list[list[float]]) -> Prediction:
    """A frame of two local tiles + global; ``tiles`` rows are p(ok, scratch, spot, crack)."""
    boxes = () if truth == "ok" else (LabelledBox(truth, (10, 10, 20, 20)),)
    item = LabelledImage(f"f{i}", f"f{i}", boxes, None, f"/nowhere/f{i}.png", 0)
    bboxes = [(0, 0, 64, 64), (48, 0, 112, 64), (0, 0, 112, 64)]
    verdict = {
        "source": {"id": item.source, "frame_index": 0},
        "verdict": "OK",
        "defects": [],
        "model": {"id": "m", "random_weights": False},
        "tiles": [
            {
                "index": k,
                "bbox": list(b),
                "is_global": k == 2,
                "probabilities": {c: round(float(p), 6) for c, p in zip(CLASSES, row)},
            }
            for k, (b, row) in enumerate(zip(bboxes, tiles))
        ],
    }
    return reaggregate([Prediction(item, verdict)], INSPECTION)[0]


@st.composite
def frame_sets(draw):
    n = draw(st.integers(4, 40))
    predictions = []
    for i in range(n):
        truth = draw(st.sampled_from(["ok", "ok", *DEFECTS]))
        tiles = []
        for _ in range(3):
            raw = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=4, max_size=4)))
            tiles.append((raw / raw.sum()).tolist())
        predictions.append(_prediction(i, truth, tiles))
    if not any(p.item.is_defective for p in predictions):
        predictions.append(_prediction(n, "spot", [[0.4, 0.2, 0.2, 0.2]] * 3))
    return predictions


@settings(max_examples=30, deadline=None)
@given(frame_sets(), st.sampled_from([0.0, 0.05, 0.2, 0.5]), st.sampled_from([0.0, 0.1, 0.3]))
def test_bounds_hold_on_the_calibration_data(predictions, max_escape: float, max_uncertain: float) -> None:
    result = calibrate(predictions, INSPECTION, CLASSES, max_escape=max_escape, max_uncertain=max_uncertain)
    rechecked = evaluate(reaggregate(predictions, result.inspection), CLASSES)  # the real aggregator decides
    assert rechecked.escape_rate is not None and rechecked.escape_rate <= max_escape + 1e-12
    assert rechecked.uncertain_rate <= max_uncertain + 1e-12
    assert rechecked.summary() == result.calibrated.summary()
    for name, threshold in result.thresholds.items():
        assert 0 < threshold <= 1 and result.inspection.defects[name].threshold == threshold


def test_a_separable_set_gets_no_escape_and_no_overkill() -> None:
    good = [_prediction(i, "ok", [[0.9, 0.04, 0.03, 0.03]] * 3) for i in range(6)]
    bad = [
        _prediction(10 + i, "crack", [[0.3, 0.05, 0.05, 0.6], [0.9, 0.04, 0.03, 0.03], [0.5, 0, 0, 0.5]])
        for i in range(4)
    ]
    result = calibrate(good + bad, INSPECTION, CLASSES, max_escape=0.0)
    assert result.calibrated.escape_rate == 0.0 and result.calibrated.overkill_rate == 0.0
    assert result.calibrated.uncertain_rate == 0.0


def test_each_class_keeps_its_own_threshold_when_another_class_would_catch_its_frames() -> None:
    """Spot frames also score 0.3 on scratch: a scratch floor of 0.3 would catch them as scratches (no
    good frame is flagged either way) and switch spot off. Each class must catch its own frames."""
    good = [_prediction(i, "ok", [[0.9, 0.05, 0.03, 0.02]] * 3) for i in range(6)]
    scratches = [_prediction(10 + i, "scratch", [[0.45, 0.5, 0.03, 0.02]] * 3) for i in range(4)]
    spots = [_prediction(20 + i, "spot", [[0.28, 0.3, 0.4, 0.02]] * 3) for i in range(4)]
    result = calibrate(good + scratches + spots, INSPECTION, CLASSES, max_escape=0.0, max_uncertain=0.0)
    assert result.thresholds["spot"] < 1  # before: 1, spot could never be reported
    judged = reaggregate(good + scratches + spots, result.inspection)
    named = {p.item.key: {d["class"] for d in p.verdict["defects"]} for p in judged}
    assert all(named[p.item.key] == {"spot"} for p in spots)
    assert all(named[p.item.key] == {"scratch"} for p in scratches)
    assert result.calibrated.escape_rate == 0.0 and result.calibrated.overkill_rate == 0.0


def test_calibrate_cli_writes_a_valid_station_and_reports_held_out(tmp_path: Path, capsys) -> None:
    """Saved verdicts (no model run): calibrate with a holdout, then measure the written config on all data."""
    from inspector.demo_data import write_demo_clip

    clips = []
    rng = np.random.default_rng(0)
    lines = []
    for seed in range(4):
        clip = write_demo_clip(tmp_path / f"clip{seed}", frames=6, size=(128, 96), seed=seed)
        clips += ["--data", str(tmp_path / f"clip{seed}")]
        for frame in clip.labels["frames"]:
            # a noisy model: defect frames score higher on average
            p_defect = float(np.clip(rng.normal(0.4 if frame["defects"] else 0.15, 0.12), 0.01, 0.97))
            row = {"ok": round(1 - p_defect, 6), "scratch": round(p_defect, 6), "spot": 0.0, "crack": 0.0}
            lines.append(
                json.dumps(
                    {
                        "source": {"id": str(clip.video), "frame_index": frame["index"]},
                        "verdict": "OK",
                        "defects": [],
                        "model": {"id": "m", "random_weights": True},
                        "tiles": [{"index": 0, "bbox": [0, 0, 128, 96], "is_global": False, "probabilities": row}],
                    }
                )
            )
    verdicts = tmp_path / "v.jsonl"
    verdicts.write_text("\n".join(lines) + "\n")
    config = station_yaml(tmp_path / "station.yaml", tmp_path / "unused-model")
    common = ["--config", str(config), *clips, "--map", "missing_piece=crack", "--verdicts", str(verdicts)]
    out = tmp_path / "calibrated.yaml"
    assert main(["calibrate", *common, "--max-escape", "0.1", "--holdout", "0.25", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "held-out frames" in captured.err and "escape rate" in captured.out
    calibrated = load_config(out)
    assert calibrated.model == load_config(config).model  # same content, new thresholds
    assert out.read_text().startswith("# Calibrated by `inspector calibrate`")
    assert main(["calibrate", *common, "--max-escape", "0.1", "--holdout", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", *common, "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--config", str(out), *common[2:], "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["escape_rate"] <= 0.1 < before["escape_rate"]  # thresholds 0.5 let the noisy model miss


def test_bad_bounds_and_no_defects(tmp_path: Path) -> None:
    good = [_prediction(i, "ok", [[0.9, 0.04, 0.03, 0.03]] * 3) for i in range(3)]
    with pytest.raises(Exception, match="no defective frame"):
        calibrate(good, INSPECTION, CLASSES, max_escape=0.1)
    with pytest.raises(Exception, match="--max-escape 1.5"):
        calibrate(good, INSPECTION, CLASSES, max_escape=1.5)

"""`inspector demo` end to end at toy sizes: every step, the table and report, honest thresholds, resuming."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from inspector.cli import main
from inspector.config import load_config
from inspector.datasets import load_datasets
from inspector.evaluation import SUMMARY_KEYS, match_verdicts, read_verdicts
from inspector.evaluation.calibrate import calibrate

pytestmark = pytest.mark.slow  # the whole main job, at toy sizes: a few minutes on 2 busy cores

STATION = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
# Small sizes for speed (hidden options); the real demo keeps every command's defaults.
SMALL = ["--preset", "test", "--size", "256x192", "--train-clips", "2", "--frames", "4", "--steps", "2",
         "--epochs", "1", "--no-progress", "--config", str(STATION)]  # fmt: skip
STEPS = ("model", "station", "data", "train", "calibrate", "replay", "evaluate")


def _demo(folder: Path, *extra: str) -> int:
    return main(["demo", "--dir", str(folder), *SMALL, *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("demo") / "run"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # module scope: no capsys; rich's stderr console writes to sys.stderr
        assert _demo(folder) == 0
    return folder, err.getvalue()


def test_the_demo_runs_every_step_and_ends_with_the_table_and_the_report(finished: tuple[Path, str]) -> None:
    folder, printed = finished
    for number, name in enumerate(STEPS, 1):
        assert f"step {number}/7: {name}" in printed
    # It ends with the evaluation table on the held-out clip and the report's path.
    tail = printed[printed.index("step 7/7") :]
    for row in ("escape rate", "overkill rate", "frame precision", "frame recall", "tile auroc", "frame auroc",
                "class accuracy", "box hit rate"):  # fmt: skip
        assert row in tail
    assert "a DEMO model: its figures and words say nothing about real parts" in tail
    assert printed.rstrip().splitlines()[-1] == f"HTML report: {folder / 'report.html'}"
    report = (folder / "report.html").read_text()
    assert "Inspection report" in report and "demo model" in report
    figures = json.loads((folder / "evaluation.json").read_text())
    assert set(SUMMARY_KEYS) <= set(figures) and figures["clip"] == str(folder / "data" / "heldout")
    assert json.loads((folder / "demo.json").read_text())["done"] == sorted(STEPS)
    training = json.loads((folder / "models" / "demo" / "training.json").read_text())
    assert training["demo_model"] is True


def test_thresholds_come_from_the_calibration_clip_only(finished: tuple[Path, str]) -> None:
    folder, _ = finished
    calibrated = load_config(folder / "station.calibrated.yaml")
    # Calibrate judged the calibration clip and nothing else ...
    judged = read_verdicts(folder / "calibration-verdicts.jsonl")
    assert {v["source"]["id"] for v in judged} == {str(folder / "data" / "calibration" / "clip.mp4")}
    # ... and its thresholds are what calibration on those verdicts gives: the held-out clip chose nothing.
    base = load_config(folder / "station.yaml")
    dataset = load_datasets([str(folder / "data" / "calibration")], base, {})
    again = calibrate(match_verdicts(dataset, judged, where="calibration"), base.inspection,
                      base.inspection.classes, max_escape=0.05, max_uncertain=0.1)  # fmt: skip
    assert {n: r.threshold for n, r in calibrated.inspection.defects.items()} == again.thresholds
    assert calibrated.inspection.uncertain_band == again.uncertain_band
    assert calibrated.inspection.explanation == "defects"
    # The held-out replay ran under those thresholds and was never an input of calibrate.
    heldout = read_verdicts(folder / "heldout-verdicts.jsonl")
    assert {v["source"]["id"] for v in heldout} == {str(folder / "data" / "heldout" / "clip.mp4")}
    assert str(folder / "data" / "heldout") not in (folder / "station.calibrated.yaml").read_text()


def test_the_stations_point_into_the_demo_folder(finished: tuple[Path, str]) -> None:
    folder, _ = finished
    station = load_config(folder / "station.calibrated.yaml")
    assert Path(str(station.model.path)) == folder / "models" / "demo"
    assert yaml.safe_load(STATION.read_text())["inspection"]["explanation"] == "defects"


def test_a_second_run_skips_finished_steps_and_prints_the_table_again(
    finished: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = finished
    weights = folder / "models" / "demo" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert _demo(folder) == 0
    printed = capsys.readouterr().err
    for number, name in enumerate(STEPS[:-1], 1):
        assert f"step {number}/7: {name} done before, skipped" in printed
    assert "tile auroc" in printed and "report.html" in printed
    assert weights.stat().st_mtime_ns == before


def test_an_interrupted_replay_continues_where_it_stopped(
    finished: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "run"
    shutil.copytree(finished[0], folder)
    # Rewrite the absolute paths of the copy's stations and verdicts (they point into the demo folder).
    for name in ("station.yaml", "station.calibrated.yaml", "heldout-verdicts.jsonl"):
        path = folder / name
        path.write_text(path.read_text().replace(str(finished[0]), str(folder)))
    verdicts = folder / "heldout-verdicts.jsonl"
    kept = verdicts.read_text().splitlines()[:2]
    verdicts.write_text("\n".join(kept) + "\n" + '{"schema": "line-insp')  # killed mid-line
    state = json.loads((folder / "demo.json").read_text())
    state["done"] = [s for s in state["done"] if s not in ("replay", "evaluate")]
    (folder / "demo.json").write_text(json.dumps(state))
    capsys.readouterr()
    assert _demo(folder) == 0
    printed = capsys.readouterr().err
    assert "step 5/7: calibrate done before, skipped" in printed and "step 6/7: replay —" in printed
    assert "already in output" in printed
    lines = verdicts.read_text().splitlines()
    assert lines[:2] == kept and len(lines) == 4


def test_a_folder_it_did_not_make_is_refused_even_with_force(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "mine.txt").write_text("x")
    assert _demo(folder, "--force") == 2
    assert "not a folder `inspector demo` made" in capsys.readouterr().err
    assert (folder / "mine.txt").read_text() == "x"  # never deleted


def test_a_damaged_state_file_names_the_fix(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "demo.json").write_text("{")
    assert _demo(folder) == 2
    assert "damaged" in capsys.readouterr().err


def test_other_settings_in_a_finished_folder_are_refused(finished: tuple[Path, str], capsys) -> None:
    assert main(["demo", "--dir", str(finished[0]), *SMALL, "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert "other settings (seed differ)" in err and "--force" in err


def test_a_missing_station_names_the_fix(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--dir", str(tmp_path / "run"), "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err


def test_help_teaches_the_steps_and_outputs(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for word in ("--dir", "--seed", "--force", "calibrat", "held-out", "report.html", "demo.json", "DEMO model"):
        assert word in text
    assert "--steps" not in text  # the test-speed knobs stay hidden

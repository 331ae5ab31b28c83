"""Engine comparison: missed defects are found, the gate decides, bad files get clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector.cli import main
from inspector.compare import compare_runs
from inspector.errors import InspectorError


def _line(index: int, verdict: str, probs: list[float], ms: float, classes: tuple[str, ...] = ()) -> str:
    return json.dumps(
        {
            "source": {"id": "clip.mp4", "frame_index": index},
            "verdict": verdict,
            "timings": {"total_ms": ms},
            "defects": [{"class": c} for c in classes],
            "tiles": [{"probabilities": {"ok": probs[0], "scratch": probs[1]}}],
        }
    )


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    reference = _write(
        tmp_path / "ref.jsonl",
        [
            _line(0, "OK", [0.9, 0.1], 100),
            _line(1, "NG", [0.2, 0.8], 100, ("scratch",)),
            _line(2, "NG", [0.3, 0.7], 100, ("scratch",)),
            _line(3, "OK", [0.8, 0.2], 100),
        ],
    )
    candidate = _write(
        tmp_path / "cand.jsonl",
        [
            _line(0, "OK", [0.85, 0.15], 50),
            _line(1, "NG", [0.25, 0.75], 50, ("scratch",)),
            _line(2, "OK", [0.6, 0.4], 50),  # a missed defect
            _line(3, "OK", [0.8, 0.2], 50),
        ],
    )
    return reference, candidate


def test_figures(runs: tuple[Path, Path]) -> None:
    result = compare_runs(*runs)
    assert result.frames_compared == 4
    assert result.agreement == 0.75
    assert result.missed_defects == [2]
    assert result.transitions == {"NG->NG": 1, "NG->OK": 1, "OK->OK": 2}
    assert result.max_prob_diff == pytest.approx(0.3)
    assert result.latency_ratio == pytest.approx(0.5)
    assert not result.passes()
    assert result.passes(max_missed=1, min_agreement=0.7)


def test_identical_runs_pass(runs: tuple[Path, Path]) -> None:
    result = compare_runs(runs[0], runs[0])
    assert result.agreement == 1.0 and result.max_prob_diff == 0.0 and result.passes()


def test_cli_gate_exit_codes(runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(runs[0]), str(runs[1]), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["missed_defects"] == [2]
    assert main(["compare", str(runs[0]), str(runs[1]), "--max-missed", "1", "--min-agreement", "0.7"]) == 0


def test_bad_inputs(tmp_path: Path, runs: tuple[Path, Path]) -> None:
    with pytest.raises(InspectorError, match="does not exist"):
        compare_runs(tmp_path / "nope.jsonl", runs[1])
    garbage = _write(tmp_path / "garbage.jsonl", ['{"hello": 1}'])
    with pytest.raises(InspectorError, match="garbage.jsonl:1: not a frame verdict"):
        compare_runs(garbage, runs[1])
    other = _write(tmp_path / "other.jsonl", [_line(99, "OK", [1, 0], 1)])
    with pytest.raises(InspectorError, match="share no frame"):
        compare_runs(other, runs[1])

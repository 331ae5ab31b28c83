"""The HTML report: what an engineer needs is on the page, and nothing they wrote can inject markup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector.cli import main
from inspector.errors import InspectorError
from inspector.report import render_report


def _verdict(index: int, verdict: str, *, random_weights: bool = False, explanation: str | None = None) -> str:
    defects = (
        [{"class": "scratch", "confidence": 0.9, "bbox": [0, 0, 64, 64], "tiles": [0], "explanation": explanation}]
        if verdict == "NG"
        else []
    )
    return json.dumps(
        {
            "source": {"id": "/data/clip.mp4", "frame_index": index},
            "verdict": verdict,
            "confidence": 0.9,
            "defects": defects,
            "model": {"id": "m", "backend": "torch", "precision": "float32", "random_weights": random_weights},
            "timings": {"total_ms": 10.0 * (index + 1)},
        }
    )


def test_report_content(tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    results.write_text(
        "\n".join([_verdict(0, "OK"), _verdict(1, "NG", explanation="<script>x</script> deep scratch")]) + "\n"
    )
    page = render_report(results, {0: "OK", 1: "NG"})
    assert "precision / recall / accuracy" in page and "1.000 / 1.000 / 1.000" in page
    assert "deep scratch" in page and "<script>" not in page
    assert "randomly initialised" not in page


def test_random_model_warning(tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    results.write_text(_verdict(0, "OK", random_weights=True) + "\n")
    assert "randomly initialised test model" in render_report(results)


def test_cli_writes_file_and_rejects_garbage(tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    results.write_text(_verdict(0, "NG") + "\n")
    out = tmp_path / "report.html"
    assert main(["report", str(results), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!doctype html>")
    (tmp_path / "bad.jsonl").write_text("nope\n")
    with pytest.raises(InspectorError, match="bad.jsonl:1"):
        render_report(tmp_path / "bad.jsonl")

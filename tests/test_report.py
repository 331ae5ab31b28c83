"""The HTML report: pictures of what went wrong, curves, tables; self-contained; renders in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from inspector.aggregate import aggregate
from inspector.cli import main
from inspector.config import InspectionConfig
from inspector.datasets import load_dataset
from inspector.demo_data import write_demo_clip
from inspector.errors import InspectorError
from inspector.evaluation import match_verdicts, read_verdicts
from inspector.evaluation.report import render_report
from inspector.payloads.verdict import FrameVerdict, ModelRef, SourceRef, StationRef, TileVerdict
from inspector.tiling import plan_tiles

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
CLASSES = ("scratch", "spot", "crack", "missing_piece")
INSPECTION = InspectionConfig(
    product="p", defects={c: {"description": c, "threshold": 0.5} for c in CLASSES}, uncertain_band=0.1
)


def _verdicts_for(
    labels: dict, video: Path, *, random_weights: bool, flip: dict[int, str], demo_model: bool = False
) -> list[str]:
    """Verdicts a perfect model would give (boxes -> tiles with p(class) 0.8, explained in words), except
    frames in ``flip``: "miss" (defects unseen) or "reject" (a spot seen on a clean frame)."""
    tiles = plan_tiles(labels["width"], labels["height"], 96, 0.2, global_view=True)
    lines = []
    for frame in labels["frames"]:
        index = frame["index"]
        tile_verdicts = []
        for tile in tiles:
            probabilities = {"ok": 0.9, **{c: 0.1 / len(CLASSES) for c in CLASSES}}
            for defect in frame["defects"]:
                x0, y0, x1, y1 = defect["bbox"]
                tx0, ty0, tx1, ty1 = tile.bbox
                if x0 < tx1 and tx0 < x1 and y0 < ty1 and ty0 < y1 and flip.get(index) != "miss":
                    probabilities = {"ok": 0.1, **{c: 0.1 / 3 for c in CLASSES if c != defect["class"]}}
                    probabilities[defect["class"]] = 0.8
            if flip.get(index) == "reject" and tile.index == 0:
                probabilities = {"ok": 0.05, "scratch": 0.0, "spot": 0.95, "crack": 0.0, "missing_piece": 0.0}
            top = max(probabilities, key=probabilities.__getitem__)
            words = None if top == "ok" else f"{top} seen in tile {tile.index} of frame {index}"
            tile_verdicts.append(
                TileVerdict(
                    index=tile.index,
                    bbox=tile.bbox,
                    is_global=tile.is_global,
                    probabilities=probabilities,
                    explanation=words,
                )  # fmt: skip
            )
        decision = aggregate(tile_verdicts, INSPECTION)
        verdict = FrameVerdict(
            station=StationRef(site="s", area="a", line="l", station="st", camera="c"),
            source=SourceRef(id=str(video), frame_index=index, captured_at=datetime.now(UTC)),
            verdict=decision.verdict,
            confidence=decision.confidence,
            defects=decision.defects,
            model=ModelRef(
                id="m", backend="torch", precision="float32", random_weights=random_weights, demo_model=demo_model
            ),  # fmt: skip
            tiles=tile_verdicts,
        )
        lines.append(verdict.to_json())
    return lines


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[int, str]]:
    root = tmp_path_factory.mktemp("report")
    clip = write_demo_clip(root / "demo", frames=8, size=(320, 192), seed=5)
    ng = [f["index"] for f in clip.labels["frames"] if f["defects"]]
    ok = [f["index"] for f in clip.labels["frames"] if not f["defects"]]
    flip = {ng[0]: "miss", ok[0]: "reject"}
    results = root / "results.jsonl"
    results.write_text("\n".join(_verdicts_for(clip.labels, clip.video, random_weights=True, flip=flip)) + "\n")
    return results, clip.labels, flip


def test_report_shows_what_went_wrong(replayed, tmp_path: Path) -> None:
    results, labels, flip = replayed
    verdicts = read_verdicts(results)
    dataset = load_dataset(results.parent / "demo", list(CLASSES))
    page = render_report(verdicts, title="t", predictions=match_verdicts(dataset, verdicts), classes=dataset.classes)
    assert "randomly initialised test model" in page
    assert "Missed defects (escapes) (1)" in page and "False rejects (overkill) (1)" in page
    found = sum(1 for f in labels["frames"] if f["defects"]) - 1  # every defective frame but the missed one
    assert f"Defects found ({found})" in page
    # pictures: each card holds the drawn frame and its heatmap, plus the curves
    assert page.count("data:image/jpeg;base64,") == 2 * (2 + found) and page.count("data:image/png;base64,") == 1
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained
    # pictures first, then curves, then the tables
    assert page.index("Missed defects") < page.index("Curves") < page.index("Confusion matrix, tiles")
    assert "escape_rate" in page and "box_hit_rate" in page


def test_report_shows_the_words_under_each_ng_picture_labelled_for_toy_models(replayed, tmp_path: Path) -> None:
    results, labels, flip = replayed
    verdicts = read_verdicts(results)
    dataset = load_dataset(results.parent / "demo", list(CLASSES))
    page = render_report(verdicts, title="t", predictions=match_verdicts(dataset, verdicts), classes=dataset.classes)
    cards = page.split("<div class='frame'>")[1:]
    flagged = [c for c in cards if "<span class='NG'>NG</span>" in c]
    assert flagged
    for card in flagged:
        # the words come after the pictures, under the random model's label
        assert card.index("<img") < card.index("<div class='words'><b>explanation</b>")
        assert "words of a RANDOM model: meaningless" in card and "seen in tile" in card
    ng = [f["index"] for f in labels["frames"] if f["defects"] and flip.get(f["index"]) != "miss"]
    assert all(f"of frame {i}</i>" in page for i in ng)
    # A demo model's words say so; a real checkpoint's carry no label.
    demo = tmp_path / "demo.jsonl"
    demo.write_text("\n".join(_verdicts_for(labels, Path(dataset.source), random_weights=False, flip={},
                                            demo_model=True)) + "\n")  # fmt: skip
    assert "words of a DEMO model" in render_report(read_verdicts(demo), title="t")
    real = tmp_path / "real.jsonl"
    real.write_text("\n".join(_verdicts_for(labels, Path(dataset.source), random_weights=False, flip={})) + "\n")
    shown = render_report(read_verdicts(real), title="t")
    assert "seen in tile" in shown and "words of a" not in shown


def test_report_without_labels_pictures_ng_frames(replayed) -> None:
    results, labels, _ = replayed
    page = render_report(read_verdicts(results), title="t")
    n_ng = sum(1 for v in read_verdicts(results) if v["verdict"] == "NG")
    assert f"NG frames ({n_ng})" in page
    assert page.count("data:image/jpeg;base64,") == 2 * min(n_ng, 12)


def test_report_escapes_markup_and_survives_a_missing_source(tmp_path: Path) -> None:
    line = json.loads(
        _verdicts_for(
            {"width": 96, "height": 96, "frames": [{"index": 0, "defects": [{"class": "spot", "bbox": [1, 1, 9, 9]}]}]},
            tmp_path / "gone.mp4",
            random_weights=False,
            flip={},
        )[0]
    )
    line["defects"][0]["explanation"] = "<script>alert(1)</script> dark stain"
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(line) + "\n")
    page = render_report(read_verdicts(results), title="<b>x</b>")
    assert "dark stain" in page and "<script>" not in page and "<b>x</b>" not in page
    assert "frame not readable from its source" in page
    assert "randomly initialised" not in page


def test_cli_writes_the_file_and_rejects_garbage(replayed, tmp_path: Path, capsys) -> None:
    results, _, _ = replayed
    out = tmp_path / "report.html"
    assert main(["report", str(results), "--labels", str(results.parent / "demo"), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!doctype html>") and not (tmp_path / "report.html.partial").exists()
    (tmp_path / "bad.jsonl").write_text("nope\n")
    with pytest.raises(InspectorError, match="bad.jsonl:1"):
        read_verdicts(tmp_path / "bad.jsonl")
    assert main(["report", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "bad.html")]) == 2
    assert "bad.jsonl:1: not a frame verdict" in capsys.readouterr().err
    assert not (tmp_path / "bad.html").exists()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt install chromium)")
def test_report_renders_in_headless_chromium(replayed, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    results, _, _ = replayed
    out = tmp_path / "report.html"
    assert main(["report", str(results), "--labels", str(results.parent / "demo"), "--out", str(out)]) == 0
    page_images = out.read_text().count("<img ")
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(out.as_uri())
            page.wait_for_load_state("load")
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            heading = page.inner_text("h1")
            words = page.inner_text("div.words") if page.query_selector("div.words") else ""
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert heading == "Inspection report"
    assert len(widths) == page_images and all(w > 0 for w in widths), widths
    assert "words of a RANDOM model" in words
    assert errors == []
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("REPORT_SCREENSHOT")  # to look at it: REPORT_SCREENSHOT=/tmp/report.png pytest ...
    if keep:
        shutil.copy(shot, keep)


def test_frames_are_re_read_from_files_but_never_from_live_sources(tmp_path: Path) -> None:
    import cv2

    from inspector.evaluation.report import read_frames

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((20, 30, 3), 50 * i, np.uint8))
    frames = read_frames([(str(tmp_path), 2), (str(tmp_path / "f1.png"), 0), ("rtsp://127.0.0.1:9/x", 0)])
    assert set(frames) == {(str(tmp_path), 2), (str(tmp_path / "f1.png"), 0)}
    assert int(frames[(str(tmp_path), 2)].mean()) == 100 and int(frames[(str(tmp_path / "f1.png"), 0)].mean()) == 50

"""The explanation judge: an NG verdict's words name its class and where a labelled defect sits in the tile."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from inspector.datasets.base import LabelledBox, LabelledImage
from inspector.evaluation import evaluate
from inspector.evaluation.predictions import Prediction
from inspector.explanation_text import COLUMNS, ROWS, explanation_hit, region

CLASSES = ("ok", "scratch", "spot")
REGIONS = sorted({region(((x + 0.5) / 3, (y + 0.5) / 3)) for x in range(3) for y in range(3)})


def _verdict(tile: tuple[int, int, int, int], text: str, kind: str = "NG") -> dict:
    flagged = kind == "NG"
    probabilities = {"ok": 0.1, "scratch": 0.8, "spot": 0.1} if flagged else {"ok": 0.9, "scratch": 0.05, "spot": 0.05}
    defect = {"class": "scratch", "confidence": 0.8, "bbox": list(tile), "tiles": [0], "explanation": text}
    defects = [defect] if flagged else []
    tiles = [{"index": 0, "bbox": list(tile), "is_global": False, "probabilities": probabilities, "explanation": text}]
    return {"verdict": kind, "defects": defects, "tiles": tiles}


@given(
    x0=st.integers(0, 500), y0=st.integers(0, 300), size=st.integers(48, 256),
    cx=st.floats(0.05, 0.95), cy=st.floats(0.05, 0.95), wrong=st.integers(1, len(REGIONS) - 1),
)  # fmt: skip
def test_the_words_hit_only_the_region_of_the_labelled_box(x0, y0, size, cx, cy, wrong) -> None:
    tile = (x0, y0, x0 + size, y0 + size)
    centre = (x0 + round(cx * size), y0 + round(cy * size))
    box = (centre[0] - 1, centre[1] - 1, centre[0] + 1, centre[1] + 1)
    where = ((centre[0] - x0) / size, (centre[1] - y0) / size)
    right = region(where)
    other = REGIONS[(REGIONS.index(right) + wrong) % len(REGIONS)]
    assert explanation_hit(_verdict(tile, f"scratch: a thin line, {right}, small"), [box]) is True
    assert explanation_hit(_verdict(tile, f"scratch: a thin line, {other}, small"), [box]) is False
    assert explanation_hit(_verdict(tile, f"spot: a dark stain, {right}, small"), [box]) is False  # not its class
    assert explanation_hit(_verdict(tile, "", "OK"), [box]) is None  # nothing said, nothing judged
    assert explanation_hit(_verdict(tile, f"scratch: a thin line, {right}, small"), []) is None  # nothing labelled


def test_evaluation_reports_the_share_of_explained_ng_frames_that_hit() -> None:
    tile = (0, 0, 96, 96)
    box = LabelledBox("scratch", (4, 4, 12, 12))  # top left of the tile
    item = LabelledImage("f#0", "f", (box,), None, "/nowhere/f.png")
    said = [f"scratch: a thin line, {ROWS[0]} {COLUMNS[0]}, small", "scratch: a thin line, centre, small", ""]
    predictions = [Prediction(item, _verdict(tile, text)) for text in said]
    assert evaluate(predictions, CLASSES).explanation_hit_rate == 0.5  # the silent frame is not judged
    assert evaluate(predictions[2:], CLASSES).explanation_hit_rate is None

"""Aggregation rules: thresholds, the uncertain band, merging neighbours, the global view."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from inspector.aggregate import aggregate, boxes_touch
from inspector.config import InspectionConfig
from inspector.payloads.verdict import TileVerdict

RULES = InspectionConfig(
    product="p",
    defects={"scratch": {"description": "d", "threshold": 0.5}, "spot": {"description": "d", "threshold": 0.8}},
    uncertain_band=0.1,
)


def tile(index: int, bbox, scratch=0.0, spot=0.0, *, is_global=False, explanation=None) -> TileVerdict:
    return TileVerdict(
        index=index,
        bbox=bbox,
        is_global=is_global,
        probabilities={"ok": 1 - scratch - spot, "scratch": scratch, "spot": spot},
        explanation=explanation,
    )


def test_all_clean_is_ok_with_weakest_confidence() -> None:
    decision = aggregate([tile(0, (0, 0, 10, 10), 0.1), tile(1, (10, 0, 20, 10), 0.3)], RULES)
    assert decision.verdict == "OK"
    assert decision.confidence == 0.7
    assert decision.defects == []


def test_threshold_is_inclusive_and_per_class() -> None:
    decision = aggregate([tile(0, (0, 0, 10, 10), scratch=0.5), tile(1, (50, 50, 60, 60), spot=0.75)], RULES)
    assert decision.verdict == "NG"
    assert [d.class_name for d in decision.defects] == ["scratch"]  # spot 0.75 < its 0.8 threshold


def test_uncertain_band() -> None:
    assert aggregate([tile(0, (0, 0, 10, 10), scratch=0.45)], RULES).verdict == "UNCERTAIN"
    assert aggregate([tile(0, (0, 0, 10, 10), scratch=0.39)], RULES).verdict == "OK"
    assert aggregate([tile(0, (0, 0, 10, 10), spot=0.7)], RULES).verdict == "UNCERTAIN"


def test_neighbours_of_same_class_merge_into_one_defect() -> None:
    tiles = [
        tile(0, (0, 0, 512, 512), scratch=0.9, explanation="long scratch"),
        tile(1, (410, 0, 922, 512), scratch=0.6),  # overlaps tile 0
        tile(2, (2000, 2000, 2512, 2512), scratch=0.7),  # far away: its own defect
    ]
    decision = aggregate(tiles, RULES)
    assert len(decision.defects) == 2
    merged = decision.defects[0]
    assert merged.bbox == (0, 0, 922, 512) and merged.tiles == [0, 1]
    assert merged.confidence == 0.9 and merged.explanation == "long scratch"
    assert decision.confidence == 0.9


def test_different_classes_do_not_merge() -> None:
    tiles = [tile(0, (0, 0, 10, 10), scratch=0.9), tile(1, (5, 0, 15, 10), spot=0.95, scratch=0.0)]
    assert sorted(d.class_name for d in aggregate(tiles, RULES).defects) == ["scratch", "spot"]


def test_global_view_only_when_no_local_tile_found_the_class() -> None:
    whole = (0, 0, 1920, 1080)
    alone = aggregate([tile(0, (0, 0, 512, 512)), tile(1, whole, scratch=0.9, is_global=True)], RULES)
    assert [d.bbox for d in alone.defects] == [whole]
    both = aggregate([tile(0, (0, 0, 512, 512), scratch=0.6), tile(1, whole, scratch=0.9, is_global=True)], RULES)
    assert [d.bbox for d in both.defects] == [(0, 0, 512, 512)]


boxes = st.tuples(st.integers(0, 100), st.integers(0, 100), st.integers(1, 50), st.integers(1, 50)).map(
    lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3])
)


@given(a=boxes, b=boxes)
def test_touching_is_symmetric_and_matches_pixel_adjacency(a, b) -> None:
    assert boxes_touch(a, b) == boxes_touch(b, a)
    # Touching means the boxes, grown by one pixel, share a pixel.
    grown = (a[0] - 1, a[1] - 1, a[2] + 1, a[3] + 1)
    shares = max(grown[0], b[0]) < min(grown[2], b[2]) and max(grown[1], b[1]) < min(grown[3], b[3])
    corner_only = (a[2] == b[0] or b[2] == a[0]) and (a[3] == b[1] or b[3] == a[1])
    assert boxes_touch(a, b) == (shares or corner_only)


@given(st.lists(st.tuples(boxes, st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=12))
def test_every_ng_tile_lands_in_exactly_one_defect(raw) -> None:
    tiles = [tile(i, b, scratch=s * 0.5, spot=p * 0.5) for i, (b, s, p) in enumerate(raw)]
    decision = aggregate(tiles, RULES)
    for name, rule in RULES.defects.items():
        hits = {t.index for t in tiles if t.probabilities[name] >= rule.threshold}
        covered = [i for d in decision.defects if d.class_name == name for i in d.tiles]
        assert sorted(covered) == sorted(hits)
    assert (decision.verdict == "NG") == bool(decision.defects)
    assert 0.0 <= decision.confidence <= 1.0

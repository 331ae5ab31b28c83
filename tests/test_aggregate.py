"""Aggregation rules: thresholds, the uncertain band, merging neighbours, the global view."""

from __future__ import annotations

from hypothesis import Phase, find, given, settings
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


# Probabilities that land on and around each rule's edges (scratch: threshold 0.5, uncertain from
# 0.4; spot: threshold 0.8, uncertain from 0.7) as well as anywhere, with scratch + spot <= 1.
EDGES = (0.0, 0.39, 0.4, 0.45, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0)


def _share(limit: float) -> st.SearchStrategy[float]:
    return st.sampled_from([e for e in EDGES if e <= limit]) | st.floats(0, limit)


# Clean tiles are common too, so that one tile alone (the global view, say) can decide a frame.
scores = st.sampled_from([(0.0, 0.0), (0.1, 0.05)]) | _share(1.0).flatmap(
    lambda s: _share(1.0 - s).map(lambda p: (s, p))
)
FRAME = (0, 0, 150, 150)
# Local tiles anywhere in the frame, and often the global view (the whole frame), last as the planner puts it.
frames = (
    st.tuples(st.lists(st.tuples(boxes, scores), max_size=11), st.none() | scores)
    .filter(lambda raw: raw[0] or raw[1])
    .map(
        lambda raw: (
            [tile(i, box, scratch=s, spot=p) for i, (box, (s, p)) in enumerate(raw[0])]
            + ([tile(len(raw[0]), FRAME, scratch=raw[1][0], spot=raw[1][1], is_global=True)] if raw[1] else [])
        )
    )
)


def _hits(tiles: list[TileVerdict], name: str, *, is_global: bool) -> list[TileVerdict]:
    threshold = RULES.defects[name].threshold
    return [t for t in tiles if t.is_global == is_global and t.probabilities[name] >= threshold]


def _uncertain(tiles: list[TileVerdict]) -> list[float]:
    return [
        t.probabilities[name]
        for name, rule in RULES.defects.items()
        for t in tiles
        if RULES.uncertain_floor(name) <= t.probabilities[name] < rule.threshold
    ]


@settings(max_examples=200)
@given(frames)
def test_frame_verdict_follows_the_rules_for_any_tiles(tiles) -> None:
    decision = aggregate(tiles, RULES)
    by_index = {t.index: t for t in tiles}
    for name in RULES.defects:
        found = [d for d in decision.defects if d.class_name == name]
        local, whole = _hits(tiles, name, is_global=False), _hits(tiles, name, is_global=True)
        if local:  # every local NG tile in exactly one defect; the global view adds none
            assert sorted(i for d in found for i in d.tiles) == sorted(t.index for t in local)
        else:  # the global view reports the class alone, as the whole frame
            assert sorted(d.tiles for d in found) == sorted([t.index] for t in whole)
            assert all(d.bbox == FRAME for d in found)
        for d in found:
            members = [by_index[i] for i in d.tiles]
            assert d.bbox == _union_of(members)
            assert d.confidence == round(max(t.probabilities[name] for t in members), 6)
            assert _connected(members)
        for a, b in ((a, b) for a in found for b in found if a is not b and local):  # local groups are maximal
            assert not any(boxes_touch(by_index[i].bbox, by_index[j].bbox) for i in a.tiles for j in b.tiles)
    if decision.defects:
        assert decision.verdict == "NG"
        assert decision.confidence == max(d.confidence for d in decision.defects)
    elif uncertain := _uncertain(tiles):
        assert decision.verdict == "UNCERTAIN" and decision.confidence == round(max(uncertain), 6)
    else:
        assert decision.verdict == "OK"
        weakest = min(1 - max(t.probabilities[n] for n in RULES.defects) for t in tiles)
        assert decision.confidence == round(weakest, 6)


def test_generated_frames_reach_every_rule() -> None:
    """The property above sees NG tiles of both classes, global-only defects, UNCERTAIN and OK frames."""
    cases = {
        "local scratch": lambda ts: bool(_hits(ts, "scratch", is_global=False)),
        "local spot": lambda ts: bool(_hits(ts, "spot", is_global=False)),
        "global view alone": lambda ts: (
            bool(_hits(ts, "spot", is_global=True)) and not _hits(ts, "spot", is_global=False)
        ),
        "global view overruled": lambda ts: bool(
            _hits(ts, "scratch", is_global=True) and _hits(ts, "scratch", is_global=False)
        ),
        "merged neighbours": lambda ts: any(len(d.tiles) > 1 for d in aggregate(ts, RULES).defects),
        "uncertain": lambda ts: aggregate(ts, RULES).verdict == "UNCERTAIN",
        "uncertain by the global view alone": lambda ts: (
            bool(ts[-1].is_global and _uncertain(ts[-1:]))
            and not _uncertain(ts[:-1])
            and not aggregate(ts, RULES).defects
        ),
        "ok": lambda ts: aggregate(ts, RULES).verdict == "OK",
    }
    for name, condition in cases.items():
        assert find(frames, condition, settings=settings(max_examples=1000, database=None, phases=[Phase.generate])), (
            name
        )


def _union_of(members: list[TileVerdict]) -> tuple[int, int, int, int]:
    return (
        min(t.bbox[0] for t in members),
        min(t.bbox[1] for t in members),
        max(t.bbox[2] for t in members),
        max(t.bbox[3] for t in members),
    )


def _connected(members: list[TileVerdict]) -> bool:
    reached, frontier = {0}, [0]
    while frontier:
        i = frontier.pop()
        for j in range(len(members)):
            if j not in reached and boxes_touch(members[i].bbox, members[j].bbox):
                reached.add(j)
                frontier.append(j)
    return len(reached) == len(members)

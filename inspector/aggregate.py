"""Tile verdicts -> one frame verdict: per-class thresholds, an uncertain band, merged defects.

Rules (documented in docs/how-it-works.md):
- a local tile is NG for class c when p(c) >= threshold(c); UNCERTAIN for c when
  threshold(c) - band <= p(c) < threshold(c);
- NG tiles of the same class whose boxes overlap or touch merge into one defect (box =
  union, confidence = max, explanation = the most confident tile's);
- the global view (whole frame downscaled) adds a frame-sized defect only for a class no
  local tile found: local tiles localise better, the global view catches large defects;
- frame verdict: NG if any defect, else UNCERTAIN if any uncertain tile, else OK;
  confidence: NG -> the strongest defect's probability, UNCERTAIN -> the strongest
  sub-threshold defect probability, OK -> the weakest tile's 1 - max defect probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inspector.config import InspectionConfig
from inspector.payloads.verdict import BBox, Defect, TileVerdict, Verdict


@dataclass(frozen=True, slots=True)
class FrameDecision:
    verdict: Verdict
    confidence: float
    defects: list[Defect]


def boxes_touch(a: BBox, b: BBox) -> bool:
    """True when half-open boxes overlap or share an edge."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _union(boxes: Sequence[BBox]) -> BBox:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _components(tiles: list[TileVerdict]) -> list[list[TileVerdict]]:
    """Connected groups of tiles whose boxes touch (union-find over pairs; frames have tens of tiles)."""
    parent = list(range(len(tiles)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(tiles)):
        for j in range(i + 1, len(tiles)):
            if boxes_touch(tiles[i].bbox, tiles[j].bbox):
                parent[find(i)] = find(j)
    groups: dict[int, list[TileVerdict]] = {}
    for i, tile in enumerate(tiles):
        groups.setdefault(find(i), []).append(tile)
    return list(groups.values())


def _defect(name: str, group: list[TileVerdict]) -> Defect:
    best = max(group, key=lambda t: t.probabilities[name])
    return Defect(
        class_name=name,
        confidence=round(best.probabilities[name], 6),
        bbox=_union([t.bbox for t in group]),
        tiles=sorted(t.index for t in group),
        explanation=best.explanation,
    )


def aggregate(tiles: Sequence[TileVerdict], inspection: InspectionConfig) -> FrameDecision:
    if not tiles:
        raise ValueError("a frame needs at least one tile to be judged")
    defects: list[Defect] = []
    uncertain: list[float] = []
    for name, rule in inspection.defects.items():
        floor = inspection.uncertain_floor(name)
        hits = [t for t in tiles if not t.is_global and t.probabilities.get(name, 0.0) >= rule.threshold]
        if hits:
            defects.extend(_defect(name, group) for group in _components(hits))
        else:
            defects.extend(
                _defect(name, [t]) for t in tiles if t.is_global and t.probabilities.get(name, 0.0) >= rule.threshold
            )
        uncertain.extend(p for t in tiles if floor <= (p := t.probabilities.get(name, 0.0)) < rule.threshold)
    defects.sort(key=lambda d: (-d.confidence, d.class_name, d.bbox))
    if defects:
        return FrameDecision("NG", defects[0].confidence, defects)
    if uncertain:
        return FrameDecision("UNCERTAIN", round(max(uncertain), 6), [])
    weakest = min(1.0 - max(t.probabilities.get(n, 0.0) for n in inspection.defects) for t in tiles)
    return FrameDecision("OK", round(weakest, 6), [])

"""Per-class thresholds and the uncertain band for a maximum escape rate, at the lowest overkill.

The verdict rules (``inspector.aggregate``) make a frame NG when some tile has p(c) >=
threshold(c), and UNCERTAIN (not OK) when some tile has p(c) >= threshold(c) - band. So a
frame *escapes* (defective, judged OK) exactly when every class stays below its floor
``threshold - band``, and is *overkill* (good, judged NG) when some class reaches its
threshold. The search, on the per-frame maximum probability of each class:

1. floors: start with every class off, then repeatedly lower the floor of the class that
   catches the most escaping defective frames per good frame it flags (greedy), until at
   most ``max_escape`` of the defective frames escape; then raise each floor back as far as
   the bound allows (fewer flagged good frames). The greedy first catches defective frames
   by a class they are labelled with, wherever the model gives that class any probability,
   and only then, for what still escapes, by any class: caught by another class's low floor,
   a crack would be reported as a scratch, and the search would switch whole classes off
   (threshold 1) because others happen to catch their frames. Raising a floor back never
   loses a frame its own class caught. The escape bound itself counts any NG verdict, and
   these class-true floors are kept only if they flag no more good frames than floors that let
   any class catch any frame (with a weak model they can cost most good frames).
2. band: thresholds = floors + band, one band for all classes; the band that minimises
   overkill while at most ``max_uncertain`` of all frames are UNCERTAIN (smallest such band).

The chosen thresholds are then checked with the real aggregator on the same verdicts, so the
operating point printed is exactly what the station will do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from inspector.aggregate import aggregate
from inspector.config import InspectionConfig, StationFile, parse_config
from inspector.errors import InspectorError
from inspector.evaluation.metrics import Evaluation, evaluate
from inspector.evaluation.predictions import Prediction
from inspector.payloads.verdict import TileVerdict

_MIN_THRESHOLD = 1e-6  # the config requires threshold > 0
_MAX_BANDS = 2000  # bands tried at most (each is one pass over the frames)


@dataclass(frozen=True)
class Calibration:
    thresholds: dict[str, float]
    uncertain_band: float
    max_escape: float
    max_uncertain: float
    calibrated: Evaluation  # on the data it was chosen on
    inspection: InspectionConfig


def _class_scores(predictions: Sequence[Prediction], defects: Sequence[str]) -> np.ndarray:
    """(frames, classes): the highest probability of each defect class over a frame's tiles."""
    return np.array(
        [[max(float(t["probabilities"].get(c, 0.0)) for t in p.tiles) for c in defects] for p in predictions],
        float,
    ).reshape(len(predictions), len(defects))


def _labelled_classes(predictions: Sequence[Prediction], defects: Sequence[str]) -> np.ndarray:
    """(frames, classes): the classes each frame is labelled with (none for a good frame)."""
    truth = np.zeros((len(predictions), len(defects)), bool)
    for i, p in enumerate(predictions):
        names = {b.class_name for b in p.item.boxes} | {p.item.whole_class}
        truth[i] = [c in names for c in defects]
    return truth


def _flagged(scores: np.ndarray, limits: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """Frames some class flags (with ``truth``: some class the frame is labelled with)."""
    hits = scores >= limits[None, :]
    return (hits if truth is None else hits & truth).any(axis=1)


def _lower_a_floor(scores: np.ndarray, floors: np.ndarray, escaping: np.ndarray, catchers: np.ndarray,
                   good: np.ndarray) -> bool:  # fmt: skip
    """Lower the floor of the class catching most of ``escaping`` per good frame it newly flags.

    ``catchers`` (frames, classes): which classes may catch which frame. False if none can.
    """
    flagged = _flagged(scores, floors)
    best: tuple[float, int, int, float] | None = None  # (cost per catch, -catches, class, floor)
    for c in range(scores.shape[1]):
        mine = escaping & catchers[:, c]
        if not mine.any():
            continue
        value = scores[mine, c].max()
        newly = scores[:, c] >= value
        gain = int((newly & mine).sum())
        cost = int((newly & good & ~flagged).sum())
        key = (cost / gain, -gain, c, value)
        if best is None or key < best:
            best = key
    if best is None:
        return False
    floors[best[2]] = best[3]
    return True


def choose_floors(
    scores: np.ndarray, defective: np.ndarray, max_escape: float, truth: np.ndarray | None = None
) -> np.ndarray:
    """Per-class floors (inf = class never flags) so that at most ``max_escape`` of defective frames escape.

    ``truth`` (frames, classes): the classes each frame is labelled with; the search prefers to
    catch a defective frame by one of them (module docstring). None: any class will do.
    """
    n_classes = scores.shape[1]
    allowed = math.floor(max_escape * defective.sum() + 1e-9)
    floors = np.full(n_classes, np.inf)
    good = ~defective
    anyone = np.ones_like(scores, bool)
    own = anyone if truth is None else truth.astype(bool) & (scores >= _MIN_THRESHOLD)
    # First by a labelled class, then by any class for what still escapes; the bound is on any NG.
    for catchers in (own, anyone):
        while (escaping := defective & ~_flagged(scores, floors, catchers)).sum() > allowed:
            if not _lower_a_floor(scores, floors, escaping, catchers, good):
                break
    own_escapes = int((defective & ~_flagged(scores, floors, own)).sum())
    # Raise each floor as far as the bound allows: it can only unflag good frames. Escapes grow
    # monotonically with a floor, so a binary search over the scores above it finds the highest.
    for c in range(n_classes):
        if not np.isfinite(floors[c]):
            continue
        values = [*sorted({float(v) for v in scores[:, c] if v > floors[c]}), np.inf]
        low, high = -1, len(values) - 1  # values[low] keeps the bound (low = -1: the current floor)
        while low < high:
            middle = (low + high + 1) // 2
            trial = floors.copy()
            trial[c] = values[middle]
            if (defective & ~_flagged(scores, trial)).sum() <= allowed and (
                defective & ~_flagged(scores, trial, own)
            ).sum() <= own_escapes:
                low = middle
            else:
                high = middle - 1
        if low >= 0:
            floors[c] = values[low]
    return floors


def _class_true_floors_unless_costlier(
    scores: np.ndarray, defective: np.ndarray, max_escape: float, truth: np.ndarray
) -> np.ndarray:
    """The floors that catch frames by their own classes, unless they flag more good frames than floors
    that let any class catch any frame: a weak model's own-class floors can sit so low that most good
    frames become NG, and then the right class name is not worth its overkill."""
    own = choose_floors(scores, defective, max_escape, truth)
    anyone = choose_floors(scores, defective, max_escape)
    good = ~defective
    return own if (good & _flagged(scores, own)).sum() <= (good & _flagged(scores, anyone)).sum() else anyone


def _thresholds(floors: np.ndarray, band: float) -> np.ndarray:
    """Thresholds as the config will hold them: 6 decimals, within (0, 1]."""
    raw = np.where(np.isfinite(floors), np.maximum(floors, _MIN_THRESHOLD) + band, 1.0)
    return np.round(np.minimum(raw, 1.0), 6)


def _floors_of(thresholds: np.ndarray, band: float) -> np.ndarray:
    """``InspectionConfig.uncertain_floor`` exactly (rounded to 9 decimals, so 0.8 - 0.1 is 0.7)."""
    return np.maximum(np.round(thresholds - band, 9), 0.0)


def choose_band(scores: np.ndarray, defective: np.ndarray, floors: np.ndarray, max_uncertain: float) -> float:
    """The band (thresholds = floors + band) with the lowest overkill at most ``max_uncertain`` UNCERTAIN."""
    finite = floors[np.isfinite(floors)]
    candidates = {0.0}
    for f in finite:  # a band only matters where a threshold crosses some frame's score
        candidates |= {round(float(s - f), 6) for s in scores.ravel() if 0 < s - f < 1}
    ordered = sorted(candidates)
    if len(ordered) > _MAX_BANDS:  # large data sets: an even spread over the crossings (0 kept)
        ordered = sorted({0.0, *(ordered[i] for i in np.linspace(0, len(ordered) - 1, _MAX_BANDS).astype(int))})
    best: tuple[int, float] | None = None
    good = ~defective
    for band in ordered:
        thresholds = _thresholds(floors, band)
        floors_used = _floors_of(thresholds, band)
        ng = _flagged(scores, thresholds)
        uncertain = _flagged(scores, floors_used) & ~ng
        if uncertain.mean() > max_uncertain + 1e-12:
            continue
        overkill = int((ng & good).sum())
        if best is None or overkill < best[0]:
            best = (overkill, band)
    return 0.0 if best is None else best[1]


def reaggregate(predictions: Sequence[Prediction], inspection: InspectionConfig) -> list[Prediction]:
    """The same tile probabilities judged again under other thresholds, by the real aggregator."""
    out = []
    for p in predictions:
        if not p.tiles:
            out.append(p)  # a failed frame stays UNCERTAIN
            continue
        tiles = [TileVerdict.model_validate(t) for t in p.tiles]
        decision = aggregate(tiles, inspection)
        verdict = dict(p.verdict)
        verdict.update(
            verdict=decision.verdict,
            confidence=decision.confidence,
            defects=[d.model_dump(mode="json", by_alias=True) for d in decision.defects],
        )
        out.append(Prediction(p.item, verdict))
    return out


def calibrate(
    predictions: Sequence[Prediction],
    inspection: InspectionConfig,
    classes: Sequence[str],
    *,
    max_escape: float,
    max_uncertain: float = 0.1,
) -> Calibration:
    if not 0 <= max_escape < 1:
        raise InspectorError(f"--max-escape {max_escape} is not in [0, 1)", "e.g. 0.01 for at most 1 % escapes")
    if not 0 <= max_uncertain <= 1:
        raise InspectorError(f"--max-uncertain {max_uncertain} is not in [0, 1]", "e.g. 0.1")
    scored = [p for p in predictions if p.tiles]
    defective = np.array([p.item.is_defective for p in scored], bool)
    if not defective.any():
        raise InspectorError(
            "the calibration data has no defective frame",
            "calibrate on data with labelled defects (with --holdout, a larger data set or a smaller share)",
        )
    defects = list(inspection.defects)
    scores = _class_scores(scored, defects)
    floors = _class_true_floors_unless_costlier(scores, defective, max_escape, _labelled_classes(scored, defects))
    band = choose_band(scores, defective, floors, max_uncertain)
    thresholds = {c: round(float(t), 6) for c, t in zip(defects, _thresholds(floors, band))}
    new = InspectionConfig.model_validate(
        {
            **inspection.model_dump(),
            "uncertain_band": round(band, 6),
            "defects": {c: {**rule.model_dump(), "threshold": thresholds[c]} for c, rule in inspection.defects.items()},
        }
    )
    checked = evaluate(reaggregate(predictions, new), classes)
    return Calibration(thresholds, round(band, 6), max_escape, max_uncertain, checked, new)


def write_station_yaml(config_path: Path, calibration: Calibration, out: Path) -> StationFile:
    """The station YAML with new thresholds and band (YAML comments are not kept), validated, written atomically."""
    data: dict[str, Any] = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    inspection = data.setdefault("inspection", {})
    inspection["uncertain_band"] = calibration.uncertain_band
    for name, threshold in calibration.thresholds.items():
        rule = inspection["defects"][name]
        rule["threshold"] = threshold
    station = parse_config(data, str(out))
    header = (
        f"# Calibrated by `inspector calibrate` from {config_path}: max escape rate {calibration.max_escape}, "
        f"max UNCERTAIN rate {calibration.max_uncertain}.\n# The original file's comments are not kept.\n"
    )
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(partial, out)
    return station

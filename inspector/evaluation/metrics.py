"""Metrics against labels, all computed by scikit-learn: tile and frame level, escapes and overkill.

Definitions (docs/evaluation.md):

- tile truth: THE labelling rule (``inspector.datasets.rule``); ambiguous tiles are left out.
  Tile score = 1 - p(ok); tile class = the most probable option.
- frame truth: defective when it has a labelled box (class folders: its folder is not ``ok``);
  its class is the largest box's. Frame score = the highest tile score (the global tile
  included); a frame whose verdict carries no tiles (a frame that failed) has no score.
- frame decisions are the verdicts themselves (NG / OK / UNCERTAIN), so thresholds and the
  uncertain band are those of the run. NG is the positive class: precision and recall count
  UNCERTAIN as not flagged; the **escape rate** is the share of defective frames judged OK,
  the **overkill rate** the share of good frames judged NG, the **UNCERTAIN rate** the share
  of all frames judged UNCERTAIN.
- class accuracy: over defective frames judged NG, the share whose most confident defect
  names one of the frame's labelled classes.
- box hit rate: the share of labelled boxes overlapped by a predicted NG defect of the same
  class found by a local tile (a defect from the global view alone spans the whole frame and
  localises nothing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inspector.datasets.rule import intersection_area, tile_labels
from inspector.evaluation.predictions import Prediction
from inspector.explanation_text import explanation_hit
from inspector.tiling import Tile

SUMMARY_KEYS = (
    "tile_auroc",
    "frame_auroc",
    "frame_precision",
    "frame_recall",
    "escape_rate",
    "overkill_rate",
    "uncertain_rate",
    "class_accuracy",
    "box_hit_rate",
    "explanation_hit_rate",
)
VERDICTS = ("OK", "NG", "UNCERTAIN")


@dataclass(frozen=True, slots=True)
class OutcomeCounts:
    """Frames by (truth, verdict); NG is the positive class."""

    true_positive: int  # defective, NG
    false_positive: int  # good, NG (overkill)
    true_negative: int  # good, OK
    false_negative: int  # defective, OK (escape)
    uncertain_defective: int
    uncertain_good: int

    @property
    def defective(self) -> int:
        return self.true_positive + self.false_negative + self.uncertain_defective

    @property
    def good(self) -> int:
        return self.false_positive + self.true_negative + self.uncertain_good

    @property
    def frames(self) -> int:
        return self.defective + self.good

    @property
    def uncertain(self) -> int:
        return self.uncertain_defective + self.uncertain_good

    @property
    def escape_rate(self) -> float | None:
        return self.false_negative / self.defective if self.defective else None

    @property
    def overkill_rate(self) -> float | None:
        return self.false_positive / self.good if self.good else None

    @property
    def uncertain_rate(self) -> float | None:
        return self.uncertain / self.frames if self.frames else None

    @property
    def precision(self) -> float | None:
        called = self.true_positive + self.false_positive
        return self.true_positive / called if called else None

    @property
    def recall(self) -> float | None:
        """Share of defective frames judged NG: UNCERTAIN ones count as not flagged."""
        return self.true_positive / self.defective if self.defective else None

    @property
    def accuracy(self) -> float | None:
        """Right OK/NG calls among the frames that got one (UNCERTAIN left out)."""
        decided = self.frames - self.uncertain
        return (self.true_positive + self.true_negative) / decided if decided else None


def outcome_counts(truth_defective: Sequence[bool], verdicts: Sequence[str]) -> OutcomeCounts:
    """Counts of (OK/NG truth) x (OK/NG/UNCERTAIN verdict), from scikit-learn's confusion matrix."""
    from sklearn.metrics import confusion_matrix

    if not truth_defective:
        return OutcomeCounts(0, 0, 0, 0, 0, 0)
    truth = ["NG" if t else "OK" for t in truth_defective]
    matrix = confusion_matrix(truth, list(verdicts), labels=list(VERDICTS))
    ok, ng, unsure = 0, 1, 2  # rows: truth, columns: verdict
    return OutcomeCounts(
        true_positive=int(matrix[ng, ng]),
        false_positive=int(matrix[ok, ng]),
        true_negative=int(matrix[ok, ok]),
        false_negative=int(matrix[ng, ok]),
        uncertain_defective=int(matrix[ng, unsure]),
        uncertain_good=int(matrix[ok, unsure]),
    )


def _number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _auroc(truth: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, scores)) if len(set(truth.tolist())) == 2 else None


def _average_precision(truth: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(truth, scores)) if truth.any() else None


def verdict_tiles(prediction: Prediction) -> list[Tile]:
    return [Tile(int(t["index"]), tuple(t["bbox"]), bool(t.get("is_global"))) for t in prediction.tiles]


def tile_truth(prediction: Prediction) -> list[str | None]:
    """The rule's label for every tile of the verdict (class-folder images: the folder's class)."""
    if prediction.item.whole_class is not None:
        return [prediction.item.whole_class] * len(prediction.tiles)
    return tile_labels(prediction.item.boxes, verdict_tiles(prediction))


def frame_score(prediction: Prediction) -> float | None:
    tiles = prediction.tiles
    return max(1.0 - float(t["probabilities"].get("ok", 0.0)) for t in tiles) if tiles else None


def predicted_class(verdict: dict[str, Any]) -> str:
    """ "ok", "UNCERTAIN", or the most confident defect's class for an NG verdict."""
    if verdict["verdict"] == "NG" and verdict.get("defects"):
        return max(verdict["defects"], key=lambda d: d["confidence"])["class"]
    return "ok" if verdict["verdict"] == "OK" else "UNCERTAIN"


def box_hits(prediction: Prediction) -> list[bool]:
    """For each labelled box: overlapped by a same-class NG defect that a local tile found?"""
    global_tiles = {int(t["index"]) for t in prediction.tiles if t.get("is_global")}
    defects = [
        d for d in prediction.verdict.get("defects") or [] if not (d.get("tiles") and set(d["tiles"]) <= global_tiles)
    ]
    return [
        any(d["class"] == box.class_name and intersection_area(box.bbox, tuple(d["bbox"])) > 0 for d in defects)
        for box in prediction.item.boxes
    ]


@dataclass
class Evaluation:
    classes: tuple[str, ...]
    counts: OutcomeCounts
    tile_auroc: float | None
    tile_average_precision: float | None
    frame_auroc: float | None
    frame_average_precision: float | None
    frame_precision: float | None
    frame_recall: float | None
    class_accuracy: float | None
    box_hit_rate: float | None
    explanation_hit_rate: float | None  # of the explained NG frames with labelled boxes (explanation_hit)
    labelled_tiles: int
    ambiguous_tiles: int
    labelled_boxes: int
    frames_without_tiles: int
    per_class: dict[str, dict[str, float | int | None]]  # tile level: precision, recall, f1, support
    tile_confusion: list[list[int]]  # rows: truth, columns: predicted, both in ``classes`` order
    frame_confusion: list[list[int]]  # rows: truth class, columns: predicted class or UNCERTAIN
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False, default_factory=dict)

    @property
    def escape_rate(self) -> float | None:
        return self.counts.escape_rate

    @property
    def overkill_rate(self) -> float | None:
        return self.counts.overkill_rate

    @property
    def uncertain_rate(self) -> float | None:
        return self.counts.uncertain_rate

    def summary(self) -> dict[str, float | None]:
        """The fixed keys `evaluate --json` prints (None where undefined)."""
        return {key: getattr(self, key) for key in SUMMARY_KEYS}


def evaluate(predictions: Sequence[Prediction], classes: Sequence[str]) -> Evaluation:
    """All metrics of ``predictions`` (verdicts paired with labels); ``classes`` "ok" first."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        precision_score,
        recall_score,
    )

    classes = tuple(classes)
    tile_true: list[str] = []
    tile_pred: list[str] = []
    tile_scores: list[float] = []
    ambiguous = 0
    for prediction in predictions:
        for tile, label in zip(prediction.tiles, tile_truth(prediction)):
            if label is None:
                ambiguous += 1
                continue
            probabilities = tile["probabilities"]
            tile_true.append(label)
            tile_pred.append(max(classes, key=lambda c: probabilities.get(c, 0.0)))
            tile_scores.append(1.0 - float(probabilities.get("ok", 0.0)))
    tile_ng = np.array([t != "ok" for t in tile_true], bool)
    tile_score_arr = np.array(tile_scores, float)

    truth_defective = [p.item.is_defective for p in predictions]
    verdicts = [p.verdict["verdict"] for p in predictions]
    scored = [(d, s) for d, p in zip(truth_defective, predictions) if (s := frame_score(p)) is not None]
    frame_ng = np.array([d for d, _ in scored], bool)
    frame_score_arr = np.array([s for _, s in scored], float)

    flagged = [v == "NG" for v in verdicts]
    if predictions:
        precision = _number(precision_score(truth_defective, flagged, zero_division=np.nan))
        recall = _number(recall_score(truth_defective, flagged, zero_division=np.nan))
    else:
        precision = recall = None

    hits = [p for p, d, v in zip(predictions, truth_defective, verdicts) if d and v == "NG"]
    if hits:
        named = [predicted_class(p.verdict) for p in hits]
        labelled = [{b.class_name for b in p.item.boxes} or {p.item.truth_class} for p in hits]
        truth = [n if n in names else p.item.truth_class for n, names, p in zip(named, labelled, hits)]
        class_accuracy = float(accuracy_score(truth, named))
    else:
        class_accuracy = None
    box_results = [hit for p in predictions for hit in box_hits(p)]
    said = [explanation_hit(p.verdict, [b.bbox for b in p.item.boxes]) for p in predictions]
    judged = [hit for hit in said if hit is not None]

    if tile_true:
        p, r, f, s = precision_recall_fscore_support(tile_true, tile_pred, labels=list(classes), zero_division=np.nan)
        per_class = {
            c: {"precision": _number(p[i]), "recall": _number(r[i]), "f1": _number(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        }
        tile_confusion = confusion_matrix(tile_true, tile_pred, labels=list(classes)).tolist()
    else:
        per_class = {c: {"precision": None, "recall": None, "f1": None, "support": 0} for c in classes}
        tile_confusion = [[0] * len(classes) for _ in classes]
    frame_labels = [*classes, "UNCERTAIN"]
    frame_confusion = (
        confusion_matrix(
            [p.item.truth_class for p in predictions],
            [predicted_class(p.verdict) for p in predictions],
            labels=frame_labels,
        )[: len(classes)].tolist()
        if predictions
        else [[0] * len(frame_labels) for _ in classes]
    )
    return Evaluation(
        classes=classes,
        counts=outcome_counts(truth_defective, verdicts),
        tile_auroc=_auroc(tile_ng, tile_score_arr) if tile_true else None,
        tile_average_precision=_average_precision(tile_ng, tile_score_arr) if tile_true else None,
        frame_auroc=_auroc(frame_ng, frame_score_arr) if scored else None,
        frame_average_precision=_average_precision(frame_ng, frame_score_arr) if scored else None,
        frame_precision=precision,
        frame_recall=recall,
        class_accuracy=class_accuracy,
        box_hit_rate=float(np.mean(box_results)) if box_results else None,
        explanation_hit_rate=float(np.mean(judged)) if judged else None,
        labelled_tiles=len(tile_true),
        ambiguous_tiles=ambiguous,
        labelled_boxes=len(box_results),
        frames_without_tiles=len(predictions) - len(scored),
        per_class=per_class,
        tile_confusion=tile_confusion,
        frame_confusion=frame_confusion,
        curves={"tile": (tile_ng, tile_score_arr), "frame": (frame_ng, frame_score_arr)},
    )

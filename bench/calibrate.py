"""Threshold calibration on a large set of verdicts: search time against computing the metrics once.

Synthetic verdicts (no model): N frames of 3 tiles, 4 defect classes, 20 % defective frames
scoring higher on average. Prints one JSON line: the calibrate search (floors, band, and the
re-check through the real aggregator) and, as the reference in the same process, one
``evaluate`` of the same frames (scikit-learn metrics), with their ratio.

    python bench/calibrate.py [--frames 10000]
"""

from __future__ import annotations

import argparse

from _common import best_of, emit, pin_to_one_core, use_checkout

use_checkout()
pin_to_one_core()

import numpy as np  # noqa: E402

from inspector.config import InspectionConfig  # noqa: E402
from inspector.datasets import LabelledBox, LabelledImage  # noqa: E402
from inspector.evaluation import Prediction, evaluate  # noqa: E402
from inspector.evaluation.calibrate import calibrate  # noqa: E402

DEFECTS = ("scratch", "spot", "crack", "missing_piece")
CLASSES = ("ok", *DEFECTS)


def synthetic(frames: int, seed: int = 0) -> list[Prediction]:
    rng = np.random.default_rng(seed)
    predictions = []
    for i in range(frames):
        defect = rng.random() < 0.2
        cls = DEFECTS[int(rng.integers(len(DEFECTS)))]
        boxes = (LabelledBox(cls, (10, 10, 40, 40)),) if defect else ()
        item = LabelledImage(f"f{i}", f"f{i}", boxes, None, f"/bench/f{i}.png", 0)
        tiles = []
        for k, bbox in enumerate(((0, 0, 64, 64), (48, 0, 112, 64), (0, 0, 112, 64))):
            raw = rng.uniform(0.05, 1.0, len(CLASSES))
            raw[0] += 2.0
            if defect and k == 0:
                raw[CLASSES.index(cls)] += rng.uniform(0.5, 3.0)
            p = raw / raw.sum()
            tiles.append(
                {
                    "index": k,
                    "bbox": list(bbox),
                    "is_global": k == 2,
                    "probabilities": {c: round(float(v), 6) for c, v in zip(CLASSES, p)},
                }
            )
        verdict = {"source": {"id": item.source, "frame_index": 0}, "verdict": "OK", "defects": [], "tiles": tiles}
        predictions.append(Prediction(item, verdict))
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000)
    args = parser.parse_args()
    inspection = InspectionConfig(product="bench", defects={c: {"description": c} for c in DEFECTS})
    predictions = synthetic(args.frames)
    result = {}

    def search() -> None:
        result["calibration"] = calibrate(predictions, inspection, CLASSES, max_escape=0.02, max_uncertain=0.1)

    calibrate_s = best_of(search, 1, warm_up=False)
    evaluate_s = best_of(lambda: evaluate(predictions, CLASSES), 1)
    counts = result["calibration"].calibrated.counts
    emit(
        {
            "bench": "calibrate",
            "frames": args.frames,
            "classes": len(DEFECTS),
            "calibrate_s": calibrate_s,
            "evaluate_s": evaluate_s,
            "calibrate_vs_evaluate": calibrate_s / evaluate_s,
            "escape_rate": counts.escape_rate,
            "overkill_rate": counts.overkill_rate,
            "uncertain_rate": counts.uncertain_rate,
        }
    )


if __name__ == "__main__":
    main()

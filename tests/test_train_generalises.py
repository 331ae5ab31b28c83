"""The default recipe learns a labelled set this project's demo code did not make.

The set is built by ``tests/foreign_sets.py``: a procedural cast-concrete surface with pits and
stains (no scikit-image photograph, no demo defect shape), COCO labels, 60 training frames and
24 held-out frames from another seed. `inspector train` runs with its DEFAULT flags (only
--config, --data, --out); the trained model then judges the held-out frames through the
inference pipeline. From the tiny random model (test widths), so the figure says the recipe
learns, not that the model knows concrete.
"""

from __future__ import annotations

import json
from pathlib import Path

import foreign_sets as fs

from inspector import cli

CLASSES = ("pit", "stain")


def test_default_flags_learn_a_foreign_set(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = fs.station_yaml(tmp_path / "station.yaml", tiny_model_dir, tile=64, classes=CLASSES)
    frames = {part: fs.make_frames(count, texture="concrete", seed=seed, classes=CLASSES, size=(192, 128))
              for part, count, seed in (("train", 60, 1), ("heldout", 24, 2))}  # fmt: skip
    train = fs.write_coco(tmp_path / "train", frames["train"], CLASSES)
    heldout = fs.write_coco(tmp_path / "heldout", frames["heldout"], CLASSES)
    out = tmp_path / "model"
    assert cli.main(["train", "--config", str(config), "--data", str(train), "--out", str(out), "--no-progress"]) == 0
    figures = fs.judge_frames(config, out, heldout)
    record = json.loads((out / "training.json").read_text())
    assert figures["defective"] == 12 and figures["frames"] == 24
    assert figures["frame_auroc"] >= 0.9, (figures, record["epochs"])

"""Train/validation splits by group (a clip or an image), never by tile: no tile of a held-out
frame, nor a near-duplicate neighbouring frame of the same clip, is ever trained on."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from inspector.datasets.base import Dataset, DatasetError


def split_dataset(
    dataset: Dataset, val_fraction: float, seed: int, *, by: Literal["group", "image"] = "group"
) -> tuple[Dataset, Dataset]:
    """(train, validation), deterministic for ``seed``.

    ``by="group"`` (default) keeps each group whole: a clip's frames all land on one side.
    ``by="image"`` splits frames/images individually, for a single clip (its neighbouring
    frames look alike, so validation figures come out optimistic). At least one unit goes
    to each side; the validation side gets ``ceil(val_fraction * units)`` units.
    """
    if not 0 < val_fraction < 1:
        raise DatasetError(f"validation fraction {val_fraction} is not between 0 and 1", "use e.g. 0.2")
    if not dataset.images:
        raise DatasetError(f"{dataset.source}: the data set is empty", "add labelled frames or images")
    unit = (lambda item: item.group) if by == "group" else (lambda item: item.key)
    units = sorted({unit(item) for item in dataset.images})
    if len(units) < 2:
        raise DatasetError(
            f"{dataset.source}: only one {by} ({units[0]}), nothing to split",
            "add more clips, pass a separate validation data set, or split by image",
        )
    order = np.random.default_rng(seed).permutation(len(units))
    n_val = min(len(units) - 1, max(1, math.ceil(val_fraction * len(units))))
    held = {units[i] for i in order[:n_val]}
    train = [item for item in dataset.images if unit(item) not in held]
    val = [item for item in dataset.images if unit(item) in held]
    return (
        dataset.subset(train, f"{dataset.source} (train, seed {seed})"),
        dataset.subset(val, f"{dataset.source} (validation, seed {seed})"),
    )

"""Augmentation moves the taught defect position with the pixels (flips and shifts)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.explanation_text import region
from inspector.training.data import augment

SIZE = 96


def _dot_tile(x: int, y: int) -> np.ndarray:
    tile = np.full((SIZE, SIZE, 3), 100, np.uint8)
    tile[y - 1 : y + 2, x - 1 : x + 2] = 250  # a 3 x 3 bright defect centred on (x, y)
    return tile


@settings(max_examples=40, deadline=None)
@given(
    x=st.integers(12, SIZE - 13),  # away from the borders: a shift of <= 6 % never reflects the dot back in
    y=st.integers(12, SIZE - 13),
    seed=st.integers(0, 2**32 - 1),
)
def test_where_follows_the_defect_through_flips_and_shifts(x: int, y: int, seed: int) -> None:
    tiles = np.stack([_dot_tile(x, y), _dot_tile(SIZE - 1 - x, y)])
    where = np.float32([[(x + 0.5) / SIZE, (y + 0.5) / SIZE], [(SIZE - x - 0.5) / SIZE, (y + 0.5) / SIZE]])
    pixels, moved = augment(tiles, np.random.default_rng(seed), where=where, photometric=0.0)
    assert moved is not None
    for image, (mx, my) in zip(pixels, moved):
        ys, xs = np.nonzero(image[..., 0] > 200)
        centre = ((xs.mean() + 0.5) / SIZE, (ys.mean() + 0.5) / SIZE)
        assert abs(centre[0] - mx) <= 1.01 / SIZE and abs(centre[1] - my) <= 1.01 / SIZE


def test_a_flipped_tile_is_taught_the_mirrored_region() -> None:
    """Over many draws both a region and its mirror are taught for one labelled tile (half the tiles are flipped)."""
    tiles = np.stack([_dot_tile(20, 20)] * 64)
    where = np.tile(np.float32([[20.5 / SIZE, 20.5 / SIZE]]), (64, 1))
    _, moved = augment(tiles, np.random.default_rng(0), where=where)
    taught = {region((float(a), float(b))) for a, b in moved}
    assert taught == {"top left", "top right", "bottom left", "bottom right"}


def test_without_where_the_pixels_are_the_same_draws() -> None:
    tiles = np.stack([_dot_tile(40, 30)] * 4)
    alone, none = augment(tiles, np.random.default_rng(7))
    with_where, _ = augment(tiles, np.random.default_rng(7), where=np.full((4, 2), 0.5, np.float32))
    assert none is None and np.array_equal(alone, with_where)

"""Vectorised patchify == transformers' PIL Qwen2-VL image processor configured as Qwen3-VL."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as hf_pil

from inspector.backends.base import PATCH_DIM
from inspector.vision import (
    MAX_PIXELS,
    MIN_PIXELS,
    check_tile_size,
    grid_thw_array,
    patchify,
    smart_resize,
    to_hf_layout,
)

# Qwen3-VL's preprocessor_config.json (Qwen/Qwen3-VL-4B-Instruct and -8B).
QWEN3_VL = dict(
    patch_size=16,
    temporal_patch_size=2,
    merge_size=2,
    image_mean=[0.5, 0.5, 0.5],
    image_std=[0.5, 0.5, 0.5],
    size={"shortest_edge": 65536, "longest_edge": 16777216},
)
SMALL_MIN = 32 * 32  # for tiles under 256 px both sides use a lower min_pixels


def reference(tiles: np.ndarray, min_pixels: int = MIN_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    config = dict(QWEN3_VL, size={"shortest_edge": min_pixels, "longest_edge": MAX_PIXELS})
    processor = hf_pil.Qwen2VLImageProcessorPil(**config)
    out = processor(images=list(tiles), return_tensors="np", input_data_format="channels_last")
    return np.asarray(out["pixel_values"]), np.asarray(out["image_grid_thw"])


def random_tiles(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def assert_parity(tiles: np.ndarray, min_pixels: int = MIN_PIXELS) -> None:
    ref_values, ref_grid = reference(tiles, min_pixels)
    values, grid = patchify(tiles, min_pixels=min_pixels)
    assert values.dtype == np.float32
    assert to_hf_layout(values).shape == ref_values.shape
    assert np.abs(to_hf_layout(values) - ref_values).max() <= 1e-6
    np.testing.assert_array_equal(grid_thw_array(len(tiles), grid), ref_grid)


@pytest.mark.parametrize("size", [256, 512])
def test_parity_with_released_config(size: int) -> None:
    assert_parity(random_tiles(2, size, seed=size))


@pytest.mark.parametrize("size", [32, 64])
def test_parity_for_small_tiles_with_lower_min_pixels(size: int) -> None:
    assert_parity(random_tiles(3, size, seed=size), min_pixels=SMALL_MIN)


def test_every_byte_value_is_bit_exact() -> None:
    # A 256x256 tile holding every value in every channel, at different positions per channel.
    ramp = np.arange(256 * 256, dtype=np.uint32).reshape(256, 256)
    tile = np.stack([ramp % 256, (ramp // 256) % 256, (ramp * 7) % 256], axis=2).astype(np.uint8)[None]
    values, _ = patchify(tile)
    np.testing.assert_array_equal(to_hf_layout(values), reference(tile)[0])


@settings(max_examples=25, deadline=None)
@given(
    size=st.sampled_from([32, 64, 96, 128, 160]),
    n=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    pattern=st.sampled_from(["random", "zeros", "full", "bands"]),
)
def test_parity_hypothesis(size: int, n: int, seed: int, pattern: str) -> None:
    tiles = random_tiles(n, size, seed)
    if pattern == "zeros":
        tiles[:] = 0
    elif pattern == "full":
        tiles[:] = 255
    elif pattern == "bands":  # position-dependent values: a wrong patch order shows
        tiles[:] = (np.arange(size)[:, None, None] * 3 + np.arange(size)[None, :, None] + np.arange(3)) % 256
    assert_parity(tiles, min_pixels=SMALL_MIN)


def test_layout_shapes_and_temporal_repeat() -> None:
    tiles = random_tiles(4, 64, seed=3)
    values, grid = patchify(tiles, min_pixels=SMALL_MIN)
    assert values.shape == (4, 16, PATCH_DIM) and grid == (1, 4, 4)
    rows = values.reshape(4, 16, 3, 2, 256)
    np.testing.assert_array_equal(rows[:, :, :, 0], rows[:, :, :, 1])

    def norm(pixels: np.ndarray) -> np.ndarray:  # the reference's arithmetic: float64 rescale, float32 normalise
        return ((pixels.astype(np.float64) / 255).astype(np.float32) - np.float32(0.5)) / np.float32(0.5)

    # Row 0 = top-left patch (red channel first); row 1 the patch right of it (same merge
    # window), row 2 the one below it, row 4 the first patch of the next window.
    np.testing.assert_array_equal(rows[0, 0, 0, 0].reshape(16, 16), norm(tiles[0, :16, :16, 0]))
    np.testing.assert_array_equal(rows[0, 1, 0, 0].reshape(16, 16), norm(tiles[0, :16, 16:32, 0]))
    np.testing.assert_array_equal(rows[0, 2, 0, 0].reshape(16, 16), norm(tiles[0, 16:32, :16, 0]))
    np.testing.assert_array_equal(rows[0, 4, 2, 0].reshape(16, 16), norm(tiles[0, :16, 32:48, 2]))
    assert to_hf_layout(values).shape == (64, PATCH_DIM)
    assert grid_thw_array(4, grid).dtype == np.int64 and grid_thw_array(4, grid).tolist() == [[1, 4, 4]] * 4


def test_out_buffer_is_reused_and_checked() -> None:
    tiles = random_tiles(2, 64, seed=5)
    out = np.full((2, 16, PATCH_DIM), np.nan, dtype=np.float32)
    values, _ = patchify(tiles, out=out, min_pixels=SMALL_MIN)
    assert values is out and not np.isnan(out).any()
    np.testing.assert_array_equal(out, patchify(tiles, min_pixels=SMALL_MIN)[0])
    with pytest.raises(ValueError, match="out must be"):
        patchify(tiles, out=np.empty((2, 16, PATCH_DIM), np.float64), min_pixels=SMALL_MIN)
    with pytest.raises(ValueError, match="out must be"):
        patchify(tiles, out=np.empty((1, 16, PATCH_DIM), np.float32), min_pixels=SMALL_MIN)


def test_empty_batch() -> None:
    values, grid = patchify(np.zeros((0, 256, 256, 3), np.uint8))
    assert values.shape == (0, 256, PATCH_DIM) and grid == (1, 16, 16)


@pytest.mark.parametrize("size", [32, 64, 224])
def test_tiles_the_released_processor_would_upscale_raise(size: int) -> None:
    # The reference really does resize them (so silently matching it is impossible) ...
    _, ref_grid = reference(random_tiles(1, size, seed=0))
    assert tuple(ref_grid[0]) != (1, size // 16, size // 16)
    # ... so patchify refuses, naming the limits.
    with pytest.raises(ValueError, match="would resize"):
        patchify(random_tiles(1, size, seed=0))


@pytest.mark.parametrize("size", [48, 100, 16])
def test_tiles_not_a_multiple_of_32_raise(size: int) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        check_tile_size(size, min_pixels=1)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"\(N, S, S, 3\)"):
        patchify(np.zeros((1, 256, 128, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, S, S, 3\)"):
        patchify(np.zeros((256, 256, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        patchify(np.zeros((1, 256, 256, 3), np.float32))


@settings(max_examples=300, deadline=None)
@given(
    height=st.integers(1, 5000),
    width=st.integers(1, 5000),
    min_pixels=st.sampled_from([1, 32 * 32, 56 * 56, MIN_PIXELS]),
    max_pixels=st.sampled_from([28 * 28 * 1280, 2048 * 2048, MAX_PIXELS]),
)
def test_smart_resize_mirrors_transformers(height: int, width: int, min_pixels: int, max_pixels: int) -> None:
    try:
        expected = hf_pil.smart_resize(height, width, 32, min_pixels, max_pixels)
    except ValueError:
        with pytest.raises(ValueError):
            smart_resize(height, width, 32, min_pixels, max_pixels)
        return
    assert smart_resize(height, width, 32, min_pixels, max_pixels) == expected


@pytest.mark.parametrize("size", [256, 288, 512, 1024, 2048, 4096])
def test_released_config_keeps_square_tiles_from_256_to_4096(size: int) -> None:
    assert hf_pil.smart_resize(size, size, 32, MIN_PIXELS, MAX_PIXELS) == (size, size)
    check_tile_size(size)


# --- the hot path: patch bytes, normalised by the backend -------------------------------


@given(
    n=st.integers(1, 3),
    windows=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=25, deadline=None)
def test_patch_bytes_normalised_equal_patchify(n: int, windows: int, seed: int) -> None:
    from inspector.vision import normalise_patch_bytes, patch_bytes

    size = windows * 32
    tiles = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    expected, grid = patchify(tiles, min_pixels=0)
    raw, raw_grid = patch_bytes(tiles, min_pixels=0)
    assert raw.dtype == np.uint8 and raw.shape == (n, expected.shape[1], 768)
    assert raw_grid == grid
    np.testing.assert_array_equal(normalise_patch_bytes(raw), expected)


def test_torch_backend_encodes_bytes_like_floats(tiny_loaded) -> None:
    from inspector.backends.torch import TorchBackend
    from inspector.vision import patch_bytes

    tiles = np.random.default_rng(5).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    backend = TorchBackend(tiny_loaded)
    floats, grid = patchify(tiles, min_pixels=0)
    raw, _ = patch_bytes(tiles, min_pixels=0)
    a, b = backend.encode(floats, grid), backend.encode(raw, grid)
    np.testing.assert_array_equal(a.embeds, b.embeds)
    np.testing.assert_array_equal(a.deepstack, b.deepstack)

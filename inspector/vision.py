"""Tiles -> Qwen3-VL ``pixel_values``: the Hugging Face image processor's numbers, vectorised.

For one S x S RGB tile the reference (``Qwen2VLImageProcessorPil`` configured as Qwen3-VL's
``preprocessor_config.json``) does, per image: ``smart_resize`` (the identity for the tiles
we accept, see :func:`check_tile_size`), rescale by 1/255 in float64 then cast to float32,
normalise ``(x - 0.5) / 0.5`` in float32, then cut 16 x 16 patches in the 2 x 2
merge-window order and repeat each patch for the 2 temporal frames. Here the same happens
for a whole batch:

* rescale + normalise are a 256-entry float32 lookup table built with the reference's own
  operations, so every value is bit-identical (no float re-association);
* the patch order, and the repeat over the 2 temporal frames, are made in uint8 (1 byte per
  value): OpenCV splits the channels, then whole 16-pixel runs move as 16-byte items, each
  written to both temporal frames by one broadcast copy. One ``cv2.LUT`` per tile then turns
  those bytes (1.5 MiB for 512 px, still in cache) into the float32 output in a single
  sequential pass, so the big array is written exactly once, at memory speed.

The output is large (a 512-px tile is 6 MiB of float32, twice its information because of
the temporal repeat), so memory bandwidth is the bound: pass ``out=`` to reuse one buffer
per stream and skip the kernel zeroing the pages of a fresh allocation (~40% slower).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

PATCH_SIZE = 16
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2
CHANNELS = 3
PATCH_DIM = CHANNELS * TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE  # 1536
PATCH_BYTES_DIM = CHANNELS * PATCH_SIZE * PATCH_SIZE  # 768: one temporal frame, before normalising
# One visual token covers FACTOR x FACTOR pixels; smart_resize rounds to multiples of it.
FACTOR = PATCH_SIZE * MERGE_SIZE
# Qwen3-VL preprocessor_config.json: size = {shortest_edge: 65536, longest_edge: 16777216},
# i.e. images are resized to hold between 256x256 and 4096x4096 pixels.
MIN_PIXELS = 65536
MAX_PIXELS = 16777216
IMAGE_MEAN = 0.5
IMAGE_STD = 0.5
RESCALE_FACTOR = 1 / 255

# uint8 -> normalised float32, computed exactly as the reference does: float64 rescale,
# cast to float32, then (x - mean) / std in float32.
_LUT = ((np.arange(256, dtype=np.float64) * RESCALE_FACTOR).astype(np.float32) - np.float32(IMAGE_MEAN)) / np.float32(
    IMAGE_STD
)
# A 16-pixel uint8 run moved as one 16-byte item (a raw copy; the float meaning is unused):
# numpy copies 16-byte items with one load/store instead of 16 byte moves.
_RUN = np.dtype(np.complex128)
assert _RUN.itemsize == PATCH_SIZE


def smart_resize(
    height: int, width: int, factor: int = FACTOR, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """The reference's target size for an image (mirrors transformers' ``smart_resize``).

    Kept here so that importing this module does not import transformers; a test checks
    it against the original.
    """
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def check_tile_size(size: int, *, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> None:
    """Raise ``ValueError`` unless the reference processor would keep a ``size`` x ``size`` tile as is.

    Resizing is deliberately not reproduced: a tile the reference would resize (not a
    multiple of 32, or outside [min_pixels, max_pixels] — with Qwen3-VL's released config,
    any tile under 256 px) changes the token count and the static vision graph, so it is a
    configuration problem, not something to paper over. Tiny test models may pass their
    own ``min_pixels``.
    """
    if size < FACTOR or size % FACTOR:
        raise ValueError(f"tile size {size} must be a positive multiple of {FACTOR} (one visual token is {FACTOR} px)")
    resized = smart_resize(size, size, FACTOR, min_pixels, max_pixels)
    if resized != (size, size):
        raise ValueError(
            f"the Qwen3-VL image processor would resize a {size}x{size} tile to {resized[1]}x{resized[0]} "
            f"(min_pixels={min_pixels}, max_pixels={max_pixels}); use a tile side between "
            f"{math.ceil(math.sqrt(min_pixels) / FACTOR) * FACTOR} and "
            f"{math.isqrt(max_pixels) // FACTOR * FACTOR} px, or the model's own min_pixels/max_pixels"
        )


def grid_for(size: int) -> tuple[int, int, int]:
    """``image_grid_thw`` of one ``size`` x ``size`` tile: (1, size/16, size/16)."""
    return (1, size // PATCH_SIZE, size // PATCH_SIZE)


def _reorder_tile(tile_rgb: np.ndarray, ordered_runs: np.ndarray) -> None:
    """One (S, S, 3) tile's bytes into the reference's patch order (wy, wx, my, mx, c, [t,] py, px).

    De-interleave the channels (SIMD in OpenCV), then move whole 16-px runs: a plane is
    (wy, my, py, wx, mx) runs, reordered to (wy, wx, my, mx, py) in one copy each. With a
    temporal axis in ``ordered_runs`` (wy, wx, my, mx, c, t, py), the same copy broadcasts
    every run to both frames.
    """
    windows = ordered_runs.shape[0]
    for c, plane in enumerate(cv2.split(np.ascontiguousarray(tile_rgb))):
        runs = plane.view(_RUN).reshape(windows, MERGE_SIZE, PATCH_SIZE, windows, MERGE_SIZE).transpose(0, 3, 1, 4, 2)
        target = ordered_runs[:, :, :, :, c]
        np.copyto(target, runs[:, :, :, :, None, :] if target.ndim == 6 else runs)


def patch_bytes(
    tiles_rgb: np.ndarray,
    *,
    out: np.ndarray | None = None,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(N, S, S, 3) RGB uint8 tiles -> patch bytes (N, P, 768) uint8 and ``grid_thw``: the hot path.

    The same rows as :func:`patchify` before its two value-only steps: the rescale/normalise
    (a 256-entry table) and the repeat over the 2 temporal frames. A backend applies those
    on its device (``normalise_patch_bytes`` is the host version), so the host writes 1/8 of
    the bytes: 48 MB instead of 384 MB for a 4K frame's 61 tiles.
    """
    _check_tiles(tiles_rgb)
    n, size = tiles_rgb.shape[0], tiles_rgb.shape[1]
    check_tile_size(size, min_pixels=min_pixels, max_pixels=max_pixels)
    windows = size // FACTOR
    shape = (n, windows * windows * MERGE_SIZE * MERGE_SIZE, PATCH_BYTES_DIM)
    if out is None:
        out = np.empty(shape, dtype=np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}, got {out.shape} {out.dtype}")
    for i in range(n):
        ordered = out[i].reshape(windows, windows, MERGE_SIZE, MERGE_SIZE, CHANNELS, PATCH_SIZE, PATCH_SIZE)
        _reorder_tile(tiles_rgb[i], ordered.view(_RUN)[..., 0])
    return out, grid_for(size)


def normalise_patch_bytes(patches: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Patch bytes (N, P, 768) uint8 -> ``pixel_values`` (N, P, 1536) float32, bit-identical to the reference.

    ``out``, if given, must be a C-contiguous float32 array of that shape; it is filled and returned.
    """
    if patches.dtype != np.uint8 or patches.ndim != 3 or patches.shape[2] != PATCH_BYTES_DIM:
        raise ValueError(f"patch bytes must be (N, P, {PATCH_BYTES_DIM}) uint8, got {patches.shape} {patches.dtype}")
    n, p = patches.shape[:2]
    if out is None:
        out = np.empty((n, p, PATCH_DIM), dtype=np.float32)
    elif out.shape != (n, p, PATCH_DIM) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {(n, p, PATCH_DIM)}, got {out.shape}")
    # Repeat over the temporal frames in uint8 (cheap), then one table lookup per tile writes
    # the float32 output in a single sequential pass.
    doubled = np.empty((p, CHANNELS, TEMPORAL_PATCH_SIZE, PATCH_SIZE * PATCH_SIZE), np.uint8)
    doubled_rows = doubled.reshape(p, PATCH_DIM)
    for i in range(n):
        np.copyto(doubled, patches[i].reshape(p, CHANNELS, 1, PATCH_SIZE * PATCH_SIZE))
        _into(out[i], cv2.LUT(doubled_rows, _LUT, dst=out[i]))
    return out


def normalisation_table() -> np.ndarray:
    """The 256 float32 values a byte maps to (rescale then normalise, as the reference computes them)."""
    return _LUT.copy()


def _check_tiles(tiles_rgb: np.ndarray) -> None:
    if tiles_rgb.ndim != 4 or tiles_rgb.shape[3] != CHANNELS or tiles_rgb.shape[1] != tiles_rgb.shape[2]:
        raise ValueError(f"tiles must be (N, S, S, 3), got shape {tiles_rgb.shape}")
    if tiles_rgb.dtype != np.uint8:
        raise ValueError(f"tiles must be uint8, got {tiles_rgb.dtype}")


def patch_shape(n: int, size: int, *, as_bytes: bool = False) -> tuple[int, int, int]:
    """Shape of ``patchify``'s (or, ``as_bytes``, ``patch_bytes``') output for ``n`` tiles of ``size`` px."""
    return (n, (size // PATCH_SIZE) ** 2, PATCH_BYTES_DIM if as_bytes else PATCH_DIM)


def patchify(
    tiles_rgb: np.ndarray,
    *,
    out: np.ndarray | None = None,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(N, S, S, 3) RGB uint8 tiles -> ``pixel_values`` (N, P, 1536) float32 and ``grid_thw``.

    P = (S/16)^2 patch rows per tile, in the order the reference emits for one image
    (2 x 2 merge windows, row-major over windows); each row is channel, temporal frame,
    16 x 16 pixels. ``grid_thw`` = (1, S/16, S/16) for every tile. ``out``, if given, must
    be a C-contiguous float32 array of that shape; it is filled and returned.
    Raises ``ValueError`` for a wrong shape/dtype or a tile size the reference would resize.
    """
    _check_tiles(tiles_rgb)
    n, size = tiles_rgb.shape[0], tiles_rgb.shape[1]
    check_tile_size(size, min_pixels=min_pixels, max_pixels=max_pixels)
    grid = grid_for(size)
    windows = size // FACTOR  # merge windows per side
    patches = windows * windows * MERGE_SIZE * MERGE_SIZE
    shape = (n, patches, PATCH_DIM)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}, got {out.shape} {out.dtype}")

    # One tile's bytes in the reference's order with the temporal repeat, (wy, wx, my, mx, c, t, py, px):
    # small enough to stay in cache until the lookup below turns it into float32.
    doubled = np.empty(
        (windows, windows, MERGE_SIZE, MERGE_SIZE, CHANNELS, TEMPORAL_PATCH_SIZE, PATCH_SIZE, PATCH_SIZE), np.uint8
    )
    doubled_runs = doubled.view(_RUN)[..., 0]  # (wy, wx, my, mx, c, t, py): 16-px runs as single items
    doubled_rows = doubled.reshape(patches, PATCH_DIM)
    for i in range(n):
        _reorder_tile(tiles_rgb[i], doubled_runs)
        # rescale + normalise: the 256-entry table, written straight into this tile's rows of out.
        _into(out[i], cv2.LUT(doubled_rows, _LUT, dst=out[i]))
    return out, grid


def _into(target: np.ndarray, result: np.ndarray) -> None:
    """Copy ``result`` into ``target`` unless OpenCV already wrote there (dst= honoured)."""
    if result is not target:
        target[...] = result


def to_hf_layout(pixel_values: np.ndarray) -> np.ndarray:
    """(N, P, 1536) -> (N*P, 1536), the reference's concatenated layout (a view when possible)."""
    return pixel_values.reshape(-1, pixel_values.shape[-1])


def grid_thw_array(n: int, grid: tuple[int, int, int]) -> np.ndarray:
    """The reference's ``image_grid_thw`` for ``n`` tiles of one grid: (n, 3) int64."""
    return np.tile(np.asarray(grid, dtype=np.int64), (n, 1))

"""One decoder for every image (inspector/decode.py): training, folder replay and ``predict`` see the same
pixels, checked on real files OpenCV writes (16-bit RGBA, 16-bit grey, 8-bit RGBA, JPEG)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.datasets.images import read_image as training_read
from inspector.decode import to_bgr_uint8
from inspector.images import to_bgr as predict_input
from inspector.sources import open_source


def replay_frames(folder: Path) -> list[np.ndarray]:
    with open_source(folder) as source:
        return [frame.image for frame in source]


def expected(raw: np.ndarray) -> np.ndarray:
    """What the line's convention says: 16 bits scaled by 255/65535, alpha over black, grey to BGR."""
    scaled = np.floor(raw.astype(np.float64) * 255.0 / 65535.0 + 0.5) if raw.dtype == np.uint16 else raw
    scaled = scaled.astype(np.float64)
    if scaled.ndim == 2:
        return np.repeat(scaled[:, :, None], 3, axis=2).astype(np.uint8)
    if scaled.shape[2] == 4:
        return np.floor(scaled[:, :, :3] * (scaled[:, :, 3:4] / 255.0) + 0.5).astype(np.uint8)
    return scaled.astype(np.uint8)


@pytest.mark.parametrize(
    ("name", "dtype", "channels"),
    [("rgba16.png", np.uint16, 4), ("grey16.png", np.uint16, 1), ("rgba8.png", np.uint8, 4), ("bgr8.png", np.uint8, 3)],
)
def test_training_replay_and_predict_decode_a_real_file_to_the_same_pixels(
    tmp_path: Path, name: str, dtype: type, channels: int
) -> None:
    rng = np.random.default_rng(7)
    top = 65535 if dtype is np.uint16 else 255
    shape = (48, 64) if channels == 1 else (48, 64, channels)
    raw = rng.integers(0, top + 1, shape, dtype=dtype)
    if channels == 4:
        raw[:8, :, 3] = 0  # fully transparent rows: black, whatever the colour underneath
        raw[8:16, :, 3] = top  # opaque rows: the colour itself
    folder = tmp_path / "images"
    folder.mkdir()
    path = folder / name
    assert cv2.imwrite(str(path), raw)
    written = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert written.dtype == dtype and written.shape == raw.shape  # a real 16-bit / alpha file
    want = expected(raw)

    training = training_read(path)
    (replay,) = replay_frames(folder)
    predict = predict_input(path)
    for got in (training, replay, predict):
        assert got.dtype == np.uint8 and got.shape == (48, 64, 3) and got.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(got, want)
    if channels == 4:
        assert not training[:8].any()  # transparent: black


def test_arrays_given_to_predict_are_normalised_as_files_are() -> None:
    raw = np.random.default_rng(3).integers(0, 65536, (8, 8, 4), dtype=np.uint16)
    np.testing.assert_array_equal(predict_input(raw), to_bgr_uint8(raw))
    np.testing.assert_array_equal(predict_input(raw), expected(raw))


def test_a_pil_rgba_image_is_composited_like_the_file() -> None:
    image = pytest.importorskip("PIL.Image")
    rgba = np.random.default_rng(5).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    pil = image.fromarray(rgba, "RGBA")
    bgra = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
    np.testing.assert_array_equal(predict_input(pil), expected(bgra))

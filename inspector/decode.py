"""The one image decoder: every image the pipeline sees becomes BGR uint8 (H, W, 3) the same way.

Training (class folders, labelled frames), replay of image folders, ``Inspector.predict`` and
the live sources all go through ``to_bgr_uint8``, so a model is served exactly the pixels it
was trained on:

- 16-bit samples are scaled by 255/65535 (full range: brightness keeps its meaning across
  images; stretching by each image's maximum would not), floats in [0, 1] by 255;
- an alpha channel (BGRA, or grey + alpha) is composited over black: a transparent pixel
  shows nothing, as on a camera;
- grayscale is repeated to three channels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Any decoded image (uint8/uint16/float; 1, 2, 3 or 4 channels) -> C-contiguous BGR uint8 (H, W, 3).

    Raises ``ValueError`` for a sample type or channel count no image has."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):  # e.g. 32-bit TIFF in [0, 1]
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported sample type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (2, 3, 4):
        raise ValueError(f"unsupported image shape {image.shape}")
    if image.shape[2] == 2:  # grey + alpha
        image = np.dstack([image[:, :, 0]] * 3 + [image[:, :, 1]])
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        return (image[:, :, :3].astype(np.float32) * alpha + 0.5).astype(np.uint8)
    return np.ascontiguousarray(image)


def decode_image(data: bytes | np.ndarray) -> np.ndarray | None:
    """Encoded bytes (PNG, JPEG, TIFF, ...) -> BGR uint8; None when they are no image OpenCV decodes."""
    buffer = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    if buffer.size == 0:
        return None
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)  # every channel and bit of it, then one normalisation
    if image is None or image.size == 0:
        return None
    try:
        return to_bgr_uint8(image)
    except ValueError as error:
        log.debug("cannot normalise a decoded image: %s", error)
        return None


def read_image_file(path: str | Path) -> np.ndarray | None:
    """An image file -> BGR uint8; None when it cannot be read or decoded (never raises)."""
    try:
        # The bytes, then imdecode: works for any path encoding and never raises on garbage.
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        log.debug("cannot read %s: %s", path, error)
        return None
    try:
        return decode_image(data)
    except cv2.error as error:
        log.debug("cannot decode %s: %s", path, error)
        return None

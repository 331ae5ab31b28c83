"""Decoding labelled images and video frames into what the pipeline sees: BGR uint8 (H, W, 3).

Class folders hold images of any kind; they are normalised the way a camera frame would be:
16-bit samples are scaled by 255/65535 (full range, so brightness keeps its meaning across
images; ``sources.base.as_bgr`` instead stretches by each image's maximum), grayscale is
repeated to three channels, and an alpha channel is composited over black (a transparent
pixel shows nothing, as on a camera).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from inspector.datasets.errors import DatasetError


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Any decoded image (uint8/uint16/float, 1/3/4 channels) -> BGR uint8 (H, W, 3)."""
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
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        return (image[:, :, :3].astype(np.float32) * alpha + 0.5).astype(np.uint8)
    if image.shape[2] != 3:
        raise ValueError(f"unsupported channel count {image.shape[2]}")
    return np.ascontiguousarray(image)


def read_image(path: Path) -> np.ndarray:
    """Decode an image file -> BGR uint8; an unreadable file is an error naming it."""

    if not path.is_file():
        raise DatasetError(f"image {path} does not exist", "check the data set's file names")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise DatasetError(f"image {path} cannot be decoded (corrupt or not an image)", "re-export or remove it")
    try:
        return to_bgr_uint8(image)
    except ValueError as error:
        raise DatasetError(f"image {path}: {error}", "save it as 8- or 16-bit PNG/JPEG") from None


def read_video_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` of a video, decoded sequentially (exact; container seeking is not)."""
    from inspector.sources.files import VideoFileSource

    with VideoFileSource(path) as source:
        for frame in source:
            if frame.index == index:
                return frame.image
            if frame.index > index:
                break
    raise DatasetError(f"{path} has no frame {index}", "the labels name a frame the video does not hold")


def fit_tile(image: np.ndarray, tile: int) -> np.ndarray:
    """A class-folder image as ONE tile: downscaled (area, aspect kept) so its longer side is ``tile``.

    An image already within the tile is left as it is; the tiler then pads it top-left, as it
    pads any frame smaller than a tile.
    """
    height, width = image.shape[:2]
    if max(height, width) <= tile:
        return image
    scale = tile / max(height, width)
    size = (max(1, min(tile, round(width * scale))), max(1, min(tile, round(height * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def check_decodes(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, raising ``DatasetError`` if it does not decode."""
    image = read_image(path)
    return int(image.shape[1]), int(image.shape[0])

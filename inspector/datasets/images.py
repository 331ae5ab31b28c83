"""Decoding labelled images and video frames into what the pipeline sees: BGR uint8 (H, W, 3).

Class folders hold images of any kind; they are decoded as every image the pipeline sees is
(inspector/decode.py: 16-bit scaled by 255/65535, alpha composited over black, grey to BGR),
so training and serving see the same pixels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from inspector.datasets.errors import DatasetError
from inspector.decode import read_image_file, to_bgr_uint8  # noqa: F401 - to_bgr_uint8 re-exported


def read_image(path: Path) -> np.ndarray:
    """Decode an image file -> BGR uint8; an unreadable file is an error naming it."""

    if not path.is_file():
        raise DatasetError(f"image {path} does not exist", "check the data set's file names")
    image = read_image_file(path)
    if image is None:
        raise DatasetError(
            f"image {path} cannot be decoded (corrupt, not an image, or an unusual sample type)",
            "re-export it as an 8- or 16-bit PNG/JPEG, or remove it",
        )
    return image


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

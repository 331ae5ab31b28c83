"""What ``Inspector.predict`` accepts, turned into the pipeline's BGR uint8 (H, W, 3) image.

A file path (any format OpenCV decodes), a numpy array as OpenCV gives it (BGR, BGRA or
grayscale, uint8 or 16-bit), or a PIL image (RGB, RGBA, L, ...: converted from RGB order); each
normalised as training and replay do (inspector/decode.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector.decode import read_image_file, to_bgr_uint8
from inspector.errors import SourceError

ImageInput = Any  # str | Path | np.ndarray | PIL.Image.Image (PIL stays an optional import)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file into BGR uint8; a clear error for a missing or undecodable file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SourceError(f"image file {path} does not exist", "pass the path of a PNG/JPEG/BMP/TIFF image")
    image = read_image_file(path)  # the decoder training and replay use (inspector/decode.py)
    if image is None:
        raise SourceError(f"{path} is not an image OpenCV can decode", "save it as PNG or JPEG")
    return image


def to_bgr(image: ImageInput) -> np.ndarray:
    """Any accepted input -> a C-contiguous BGR uint8 (H, W, 3) array (numpy input is never modified)."""
    if isinstance(image, str | Path):
        return read_image(image)
    if isinstance(image, np.ndarray):
        return _array_to_bgr(image)
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL.Image.Image, without importing PIL
        if image.mode in ("I;16", "I;16B", "I;16L"):  # 16-bit grey: scaled as a 16-bit file would be
            return to_bgr_uint8(np.asarray(image).astype(np.uint16))
        if "A" in image.mode or "transparency" in getattr(image, "info", {}):  # alpha: composited over black
            return to_bgr_uint8(cv2.cvtColor(np.asarray(image.convert("RGBA")), cv2.COLOR_RGBA2BGRA))
        return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    raise SourceError(
        f"cannot inspect a {type(image).__name__}",
        "pass a file path, a numpy array (BGR uint8 as OpenCV gives, or grayscale) or a PIL image",
    )


def _array_to_bgr(array: np.ndarray) -> np.ndarray:
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))
    if not shape_ok or array.size == 0:
        raise SourceError(
            f"an image array must be (H, W) grayscale or (H, W, 3) BGR / (H, W, 4) BGRA, got shape {array.shape}",
            "pass the array as cv2.imread returns it",
        )
    if array.dtype not in (np.uint8, np.uint16):
        raise SourceError(
            f"image arrays must be uint8 (or 16-bit), got {array.dtype}",
            "convert first, e.g. (image * 255).clip(0, 255).astype(np.uint8) for floats in [0, 1]",
        )
    return to_bgr_uint8(array)

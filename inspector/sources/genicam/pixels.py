"""Camera pixel formats (GenICam PFNC names) -> the pipeline's BGR uint8 frames, with OpenCV.

Not inspector/decode.py's ``to_bgr_uint8``: a camera buffer is raw, 8-bit, laid out by its pixel
format (Bayer needs demosaicing), and its ``a`` byte is padding (often 0), not transparency, so it
is dropped here where the decoder composites an image file's alpha over black.
"""

from __future__ import annotations

import cv2
import numpy as np

from inspector.errors import SourceError

# OpenCV names a Bayer pattern by the second row's second and third pixels, GenICam by the first
# row's first two: GenICam BayerRG (R at (0, 0)) is OpenCV's BayerBG.
_CONVERSIONS: dict[str, int | None] = {
    "Mono8": cv2.COLOR_GRAY2BGR,
    "BGR8": None,
    "RGB8": cv2.COLOR_RGB2BGR,
    "BGRa8": cv2.COLOR_BGRA2BGR,
    "RGBa8": cv2.COLOR_RGBA2BGR,
    "BayerRG8": cv2.COLOR_BayerBG2BGR,
    "BayerBG8": cv2.COLOR_BayerRG2BGR,
    "BayerGR8": cv2.COLOR_BayerGB2BGR,
    "BayerGB8": cv2.COLOR_BayerGR2BGR,
}
SUPPORTED_PIXEL_FORMATS = tuple(_CONVERSIONS)
# Older (GigE Vision 1.x / pylon 5) spellings of the same formats.
_ALIASES = {"BGR8Packed": "BGR8", "RGB8Packed": "RGB8", "BGRA8Packed": "BGRa8", "RGBA8Packed": "RGBa8"}
_LOWER = {name.lower(): name for name in (*_CONVERSIONS, *_ALIASES)}


def normalise_pixel_format(name: str) -> str | None:
    """The PFNC name this module converts, for a camera's (or a user's) spelling; None if unsupported."""
    canonical = _LOWER.get(name.strip().lower())
    if canonical is None:
        return None
    return _ALIASES.get(canonical, canonical)


def to_bgr(data: np.ndarray, pixel_format: str, width: int, height: int) -> np.ndarray:
    """A camera buffer (flat or shaped) in ``pixel_format`` as a BGR uint8 (height, width, 3) image."""
    name = normalise_pixel_format(pixel_format)
    if name is None:
        raise SourceError(
            f"the camera sends {pixel_format}, which is not converted to BGR here",
            f"set source.camera.pixel_format to one of {', '.join(SUPPORTED_PIXEL_FORMATS)}",
        )
    channels = {"BGR8": 3, "RGB8": 3, "BGRa8": 4, "RGBa8": 4}.get(name, 1)
    flat = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    expected = width * height * channels
    if flat.size < expected:
        raise SourceError(f"a {width}x{height} {name} image needs {expected} bytes; the buffer has {flat.size}")
    image = flat[:expected].reshape((height, width, channels) if channels > 1 else (height, width))
    code = _CONVERSIONS[name]
    return np.ascontiguousarray(image) if code is None else cv2.cvtColor(image, code)

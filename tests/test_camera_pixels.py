"""Camera pixel formats -> BGR: each Bayer pattern named as GenICam names it, checked on mosaics we build."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.errors import SourceError
from inspector.sources.genicam.pixels import normalise_pixel_format, to_bgr

# Where red sits in the 2x2 cell for each GenICam pattern (row, col); blue is diagonal to it.
RED_AT = {"BayerRG8": (0, 0), "BayerGR8": (0, 1), "BayerGB8": (1, 0), "BayerBG8": (1, 1)}
colours = st.tuples(*(st.integers(0, 255),) * 3)


def mosaic(bgr: tuple[int, int, int], pattern: str, size: int = 16) -> np.ndarray:
    """What a sensor with ``pattern`` records of a flat colour ``bgr``."""
    blue, green, red = bgr
    raw = np.full((size, size), green, np.uint8)
    ry, rx = RED_AT[pattern]
    raw[ry::2, rx::2] = red
    raw[1 - ry :: 2, 1 - rx :: 2] = blue
    return raw


@settings(max_examples=40, deadline=None)
@given(colour=colours, pattern=st.sampled_from(sorted(RED_AT)))
def test_bayer_patterns_demosaic_to_the_colour_photographed(colour: tuple[int, int, int], pattern: str) -> None:
    image = to_bgr(mosaic(colour, pattern).reshape(-1), pattern, 16, 16)
    assert image.shape == (16, 16, 3)
    inner = image[4:-4, 4:-4].reshape(-1, 3).astype(int)
    assert np.abs(inner - np.array(colour)).max() <= 1


@settings(max_examples=30, deadline=None)
@given(colour=colours)
def test_packed_colour_formats_are_bgr_after_conversion(colour: tuple[int, int, int]) -> None:
    b, g, r = colour
    assert to_bgr(np.array([b, g, r] * 4, np.uint8), "BGR8Packed", 2, 2)[0, 0].tolist() == [b, g, r]
    assert to_bgr(np.array([r, g, b] * 4, np.uint8), "RGB8", 2, 2)[0, 0].tolist() == [b, g, r]
    assert to_bgr(np.array([r, g, b, 255] * 4, np.uint8), "RGBa8", 2, 2)[0, 0].tolist() == [b, g, r]
    assert to_bgr(np.array([g] * 4, np.uint8), "Mono8", 2, 2)[0, 0].tolist() == [g, g, g]


def test_unsupported_or_short_buffers_are_clear_errors() -> None:
    assert normalise_pixel_format("bgr8packed") == "BGR8"
    assert normalise_pixel_format("Mono12") is None
    with pytest.raises(SourceError, match="Mono12, which is not converted"):
        to_bgr(np.zeros(8, np.uint8), "Mono12", 2, 2)
    with pytest.raises(SourceError, match="needs 12 bytes; the buffer has 8"):
        to_bgr(np.zeros(8, np.uint8), "BGR8", 2, 2)

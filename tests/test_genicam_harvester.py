"""genicam:// cameras through harvesters against the simulator GenTL producer the genicam wheel ships (viky.cti).

The simulator has three cameras (serials 0, 1, 2), Width/Height 100..800, PixelFormat RGBa8 or
Mono8 and a frame rate; it has no trigger, exposure or gain features, so those paths are tested
on pypylon's emulator (tests/test_genicam_pylon.py) and here only for their clear refusal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("harvesters", reason="genicam:// needs the genicam extra (pip install 'line-inspector[genicam]')")
pytest.importorskip("genicam")

from inspector.camera_config import CameraConfig  # noqa: E402
from inspector.errors import SourceError  # noqa: E402
from inspector.sources import open_source  # noqa: E402
from inspector.sources.genicam.harvester import simulator_producer  # noqa: E402
from inspector.sources.genicam.settings import CameraSettingError  # noqa: E402

SIMULATOR = "genicam://viky.cti"


def test_the_wheel_ships_its_simulator_producer() -> None:
    assert simulator_producer().is_file()


@pytest.mark.parametrize("pixel_format", ["Mono8", "RGBa8"])
def test_frames_arrive_as_bgr_in_either_pixel_format(pixel_format: str) -> None:
    camera = CameraConfig(pixel_format=pixel_format, roi={"width": 320, "height": 240}, frame_rate=50.0)
    with open_source(f"{SIMULATOR}?serial=1", camera=camera) as source:
        frame = source.read(10)
        assert frame is not None
        assert frame.image.shape == (240, 320, 3) and frame.image.dtype == np.uint8
        assert "block_id" in frame.meta
        if pixel_format == "Mono8":
            assert np.array_equal(frame.image[..., 0], frame.image[..., 2])  # grey is grey in every channel
        assert source.source_id == "genicam:viky.cti:1"


def test_the_full_path_to_a_producer_works_too() -> None:
    with open_source(f"genicam://{simulator_producer()}?index=2", camera=CameraConfig(pixel_format="Mono8")) as source:
        assert source.read(10) is not None


def test_a_value_outside_the_simulators_range_is_named() -> None:
    with pytest.raises(CameraSettingError, match=r"Width 1000 \(source.camera.roi.width\) .* range 100\.\.800"):
        open_source(SIMULATOR, camera=CameraConfig(roi={"width": 1000, "height": 200}))
    with pytest.raises(CameraSettingError, match=r"PixelFormat 'BayerRG8' .* not offered .* offers RGBa8, Mono8"):
        open_source(SIMULATOR, camera=CameraConfig(pixel_format="BayerRG8"))


def test_a_camera_without_trigger_or_exposure_says_so() -> None:
    with pytest.raises(CameraSettingError, match="has no TriggerMode feature"):
        open_source(SIMULATOR, camera=CameraConfig(trigger="software"))
    with pytest.raises(CameraSettingError, match=r"has no ExposureTime or ExposureTimeAbs feature"):
        open_source(SIMULATOR, camera=CameraConfig(exposure_us=1000.0))


def test_an_unknown_device_or_producer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no device .*'serial': '9'.* \(found: 0 \(VikyTL_DEV_red\)"):
        open_source(f"{SIMULATOR}?serial=9")
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"genicam://{tmp_path}/vendor.cti")
    with pytest.raises(SourceError, match="is not a .cti file"):
        open_source(f"genicam://{tmp_path}/vendor.so")

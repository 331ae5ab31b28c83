"""pylon:// cameras against pypylon's own camera emulator (PYLON_CAMEMU), serving frames of ours."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pypylon", reason="pylon:// needs the genicam extra (pip install 'line-inspector[genicam]')")

from inspector.config import ReconnectConfig  # noqa: E402
from inspector.errors import SourceError  # noqa: E402
from inspector.sources import open_source, source_kind  # noqa: E402
from inspector.sources.genicam import CameraSource, parse_camera_uri  # noqa: E402
from inspector.sources.genicam.settings import CameraSettingError  # noqa: E402

from cameras import LEVELS, UnpluggableDriver, emulator_camera, level_of, write_emulator_frames  # noqa: E402
from streams import poll  # noqa: E402

FAST = ReconnectConfig(initial_s=0.05, max_s=0.2)


@pytest.fixture(scope="module")
def frames_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_emulator_frames(tmp_path_factory.mktemp("emulator-frames"))


def test_camera_uris_are_their_own_kind() -> None:
    assert source_kind("pylon://0815-0000") == "genicam"
    assert source_kind("genicam:///opt/x.cti?serial=1") == "genicam"
    assert parse_camera_uri("pylon://0815-0001") == ("pylon", "0815-0001", {})
    assert parse_camera_uri("genicam:///opt/p.cti?serial=7") == ("genicam", "/opt/p.cti", {"serial": "7"})
    with pytest.raises(SourceError, match="names no camera"):
        parse_camera_uri("pylon://")
    with pytest.raises(SourceError, match="unknown: colour"):
        parse_camera_uri("genicam:///opt/p.cti?colour=red")


def test_software_trigger_judges_exactly_the_image_fired_for_each_part(frames_folder: Path) -> None:
    camera = emulator_camera(frames_folder, trigger="software")
    with open_source("pylon://0815-0000", camera=camera) as source:
        assert isinstance(source, CameraSource)
        parts = [f"P-{i}" for i in range(7)]
        for part in parts:
            source.fire(part)
        got = [source.read(10) for _ in parts]
        assert None not in got
        assert [f.part_id for f in got] == parts  # one image per part, in firing order
        # The emulator serves the folder in order: the i-th firing is the i-th image (wrapping).
        assert [level_of(f.image) for f in got] == [LEVELS[i % len(LEVELS)] for i in range(len(parts))]
        assert all(f.image.shape == (720, 1280, 3) for f in got)
        assert [f.meta["block_id"] for f in got] == list(range(len(parts)))
        assert source.read(0.3) is None  # nothing fired, nothing grabbed
        assert source.fired == len(parts)


def test_free_run_keeps_the_freshest_frame(frames_folder: Path) -> None:
    camera = emulator_camera(frames_folder, frame_rate=50.0)
    with open_source("pylon://0", camera=camera) as source:
        first = source.read(10)
        assert first is not None and first.part_id is None
        assert poll(lambda: source.stats.dropped_stale > 0)  # nobody read: older frames were replaced
        later = source.read(10)
        assert later is not None and later.meta["block_id"] > first.meta["block_id"] + 1


def test_settings_are_written_and_read_back(frames_folder: Path) -> None:
    camera = emulator_camera(frames_folder, trigger="software", exposure_us=2500.0, gain_db=6.0)
    with open_source("pylon://0", camera=camera) as source:
        features = source.driver.features  # type: ignore[attr-defined]
        assert features.get("ExposureTime") == pytest.approx(2500.0)
        assert features.get("Gain") == pytest.approx(6.0, abs=0.1)
        assert features.get("PixelFormat") == "BGR8Packed"  # the emulator's older spelling of BGR8
        assert features.get("TriggerMode") == "On"
        assert features.get("TriggerSource") == "Software"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"exposure_us": 0.5}, r"ExposureTime 0.5 \(source.camera.exposure_us\) is outside the camera's range 1\.\."),
        ({"gain_db": 99.0}, r"Gain 99 \(source.camera.gain_db\) is outside the camera's range 0\.\.48"),
        ({"roi": {"width": 5000, "height": 100}}, r"Width 5000 \(source.camera.roi.width\) .* range 1\.\.4096"),
        ({"roi": {"x": 4000, "width": 1280, "height": 720}}, r"OffsetX 4000 \(source.camera.roi.x\) .* 0\.\.2816"),
        ({"pixel_format": "Mono12"}, r"pixel_format 'Mono12' cannot be converted to BGR"),
        ({"features": {"NoSuchFeature": 1}}, r"has no NoSuchFeature feature \(source.camera.features.NoSuchFeature\)"),
        ({"features": {"TestImageSelector": "Testimage9"}}, r"TestImageSelector 'Testimage9' .* not one this camera"),
        ({"trigger": "software", "frame_rate": 10.0}, r"frame_rate 10 applies to free_run only"),
        ({"trigger": "hardware", "trigger_line": "Line9"}, r"TriggerSource 'Line9' \(source.camera.trigger_line\)"),
    ],
)
def test_a_setting_the_camera_refuses_names_feature_value_and_range(
    frames_folder: Path, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(CameraSettingError, match=message) as caught:
        open_source("pylon://0", camera=emulator_camera(frames_folder, **settings))
    assert caught.value.hint  # and says what to do


def test_a_missing_camera_names_the_ones_found() -> None:
    with pytest.raises(SourceError, match=r"no Basler camera with serial or user name '4711' \(found: 0815-0000"):
        open_source("pylon://4711")


def test_failed_buffers_are_counted_and_the_part_fired_again(frames_folder: Path) -> None:
    camera = emulator_camera(frames_folder, trigger="software", fire_retries=2, features={"ForceFailedBufferCount": 2})
    with open_source("pylon://0", camera=camera) as source:
        source.driver.features.execute("ForceFailedBuffer")  # type: ignore[attr-defined]  # the next 2 grabs fail
        source.fire("P-1")
        frame = source.read(10)
        assert frame is not None and frame.part_id == "P-1"
        assert source.incomplete_buffers == 2
        assert source.stats.frames_skipped_corrupt == 2
        assert frame.meta["block_id"] == 2  # the two failed buffers used up block ids 0 and 1


def test_a_part_whose_image_keeps_failing_is_left_to_the_trigger_timeout(frames_folder: Path) -> None:
    camera = emulator_camera(frames_folder, trigger="software", fire_retries=1, features={"ForceFailedBufferCount": 2})
    with open_source("pylon://0", camera=camera) as source:
        source.driver.features.execute("ForceFailedBuffer")  # type: ignore[attr-defined]
        source.fire("P-1")
        assert poll(lambda: source.incomplete_buffers == 2)
        assert source.read(0.3) is None  # no image for P-1: its trigger times out with the reason below
        assert "incomplete" in (source.problem or "")
        source.fire("P-2")
        frame = source.read(10)
        assert frame is not None and frame.part_id == "P-2" and source.healthy


def test_hardware_trigger_frames_carry_block_id_and_sequence(frames_folder: Path) -> None:
    # The emulator has no input line: the test plays the line controller's photo-eye by firing the
    # camera itself (TriggerSource Software), which the service never does in hardware mode.
    camera = emulator_camera(frames_folder, trigger="hardware", trigger_line="Software", grab_timeout_s=0.2)
    with open_source("pylon://0", camera=camera) as source:
        assert source.read(0.5) is None  # no line pulse, no frame; grab time-outs are not a fault here
        assert source.healthy
        pylon_camera = source.driver.camera  # type: ignore[attr-defined]
        for _ in range(3):
            pylon_camera.ExecuteSoftwareTrigger()
            assert poll(lambda: len(source._frames) > 0, 10)  # noqa: SLF001 - fire the next pulse after this one
            frame = source.read(1)
            assert frame is not None
        source.driver.features.set("ForceFailedBufferCount", 1)  # type: ignore[attr-defined]
        source.driver.features.execute("ForceFailedBuffer")  # type: ignore[attr-defined]
        pylon_camera.ExecuteSoftwareTrigger()  # a frame lost on the way
        assert poll(lambda: source.incomplete_buffers == 1)
        pylon_camera.ExecuteSoftwareTrigger()
        frame = source.read(10)
        assert frame is not None and frame.part_id is None
        assert frame.meta["block_id"] == 4
        assert frame.meta["trigger_sequence"] == 4  # the lost frame keeps its place in the sequence


def test_unplugged_camera_degrades_then_reconnects_with_its_settings(frames_folder: Path) -> None:
    camera = emulator_camera(frames_folder, trigger="software", exposure_us=3000.0)
    driver = UnpluggableDriver("0815-0000")
    source = CameraSource(driver, camera, source_id="pylon:0815-0000", reconnect=FAST)
    try:
        source.fire("P-1")
        assert source.read(10) is not None
        driver.unplugged = True
        assert poll(lambda: not source.healthy)
        assert "camera" in (source.problem or "")
        assert poll(lambda: "no Basler camera" in (source.problem or ""))  # reopening keeps failing, named
        driver.unplugged = False
        assert poll(lambda: source.healthy)
        assert source.stats.reconnects >= 1
        assert driver.features is not None and driver.features.get("ExposureTime") == pytest.approx(3000.0)
        source.fire("P-2")
        frame = source.read(10)
        assert frame is not None and frame.part_id == "P-2"
    finally:
        source.close()


def test_a_camera_absent_at_start_is_waited_for(frames_folder: Path) -> None:
    driver = UnpluggableDriver("0815-0000")
    driver.unplugged = True
    source = CameraSource(
        driver, emulator_camera(frames_folder, trigger="software"), source_id="pylon:0815-0000",
        reconnect=FAST, wait_for_first=True,
    )  # fmt: skip
    try:
        assert not source.healthy and "no Basler camera" in (source.problem or "")
        driver.unplugged = False
        assert poll(lambda: source.healthy)
    finally:
        source.close()
    with pytest.raises(SourceError, match="no Basler camera"):
        unplugged = UnpluggableDriver("0815-0000")
        unplugged.unplugged = True
        CameraSource(unplugged, emulator_camera(frames_folder), source_id="pylon:0815-0000")

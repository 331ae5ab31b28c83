"""The edge service on pypylon's emulated camera: a part trigger fires the camera, exactly that image is judged.

Real Mosquitto, the tiny model, the emulator serving frames of ours (tests/cameras.py). The line
controller is a plain paho client publishing triggers; each part must get exactly one verdict
with its part id, judged on the image the camera took for it (the evidence's frame index is the
camera's block id), and a camera that goes away makes the station degraded with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pypylon", reason="the camera tests need the genicam extra (pip install 'line-inspector[genicam]')")

from edge_station import Subscriber, build_service, config_for, station_data  # noqa: E402
from test_edge_triggered import start  # noqa: E402

from cameras import emulator_camera, write_emulator_frames  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from streams import poll  # noqa: E402

WAIT_S = 60.0


@pytest.fixture(scope="module")
def frames_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_emulator_frames(tmp_path_factory.mktemp("emulator-frames"), size=(512, 256))


def camera_station(model_dir: Path, folder: Path, timeout_s: float = 30.0, **camera: object) -> dict:
    settings = emulator_camera(folder, trigger="software", **camera).model_dump(exclude_defaults=True)
    settings["roi"] = {"width": 512, "height": 256}
    return station_data(model_dir, "pylon://0815-0000", trigger="mqtt", trigger_timeout_s=timeout_s, camera=settings)


@pytest.fixture(scope="module")
def inspector(tiny_model_dir: Path, frames_folder: Path):
    from inspector.pipeline import build_inspector

    return build_inspector(config_for(camera_station(tiny_model_dir, frames_folder)))


def test_every_part_trigger_fires_the_camera_once_and_gets_one_verdict(
    broker: Mosquitto, inspector, tiny_model_dir: Path, frames_folder: Path, tmp_path: Path
) -> None:
    config = config_for(camera_station(tiny_model_dir, frames_folder))
    service = build_service(config, inspector, broker.port, tmp_path)
    subscriber = Subscriber(broker.port)
    running = start(service, subscriber)
    try:
        assert poll(lambda: service.capture.healthy, WAIT_S), service.capture.reason()
        parts = [f"P-{i:03d}" for i in range(6)]
        for index, part in enumerate(parts):
            subscriber.trigger("st", {"part_id": part, "sequence": index})
        assert poll(lambda: len(subscriber.json("verdict")) >= len(parts), WAIT_S)
        verdicts = subscriber.json("verdict")
        assert sorted(v["source"]["part_id"] for v in verdicts) == parts  # exactly one each
        assert all(v["error"] is None for v in verdicts), [v["error"] for v in verdicts]
        source = service.capture.source
        assert source is not None and source.fired == len(parts)  # the camera fired once per part, no more
        assert service.lane.passed_over == 0  # no image was taken that no part claimed
        assert service.triggers is not None and service.triggers.counts["served"] == len(parts)
    finally:
        assert running.stop() == 0
        subscriber.close()


def test_camera_settings_the_camera_refuses_degrade_the_station_with_the_reason(
    broker: Mosquitto, inspector, tiny_model_dir: Path, frames_folder: Path, tmp_path: Path
) -> None:
    config = config_for(camera_station(tiny_model_dir, frames_folder, timeout_s=2.0, exposure_us=0.5))
    service = build_service(config, inspector, broker.port, tmp_path)
    subscriber = Subscriber(broker.port)
    running = start(service, subscriber)
    try:
        named = lambda: [s for s in subscriber.json("status") if "ExposureTime" in (s.get("reason") or "")]  # noqa: E731
        assert poll(named, WAIT_S), subscriber.json("status")
        status = named()[-1]
        assert status["state"] == "degraded"
        assert "ExposureTime 0.5 (source.camera.exposure_us) is outside the camera's range 1..10000000" in (
            status["reason"]
        )
        subscriber.trigger("st", {"part_id": "P-1"})
        assert poll(lambda: subscriber.json("verdict"), WAIT_S)
        (verdict,) = subscriber.json("verdict")
        assert verdict["verdict"] == "UNCERTAIN" and "ExposureTime" in verdict["error"]
    finally:
        assert running.stop() == 0
        subscriber.close()

"""Triggered inspection end to end, in process: a real Mosquitto, the HTTP camera stand-in, the tiny model.

The line controller's side is a plain paho client: it publishes triggers and reads verdicts, rejects
and the retained last-NG picture. Waits are bounded polls of what arrives, never timing assertions.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cv2
import pytest
from edge_station import RunningService, Subscriber, build_service, config_for, station_data

from inspector.config import EvidenceConfig

from mosquitto import Mosquitto, free_port
from streams import MjpegCamera, noise_camera, poll

WAIT_S = 60.0


@pytest.fixture(scope="module")
def inspector(tiny_model_dir: Path):
    from inspector.pipeline import build_inspector

    return build_inspector(config_for(ng_station(tiny_model_dir, "http://127.0.0.1:1/x.mjpg")))


def ng_station(model_dir: Path, source: str, **source_extra) -> dict:
    data = station_data(model_dir, source, trigger="mqtt", **source_extra)
    # Thresholds this low make the random model's every tile NG, so each part also gets a reject.
    data["inspection"]["defects"] = {"scratch": {"description": "a thin line", "threshold": 0.05}}
    return data


@pytest.fixture
def camera() -> Iterator[MjpegCamera]:
    yield from noise_camera(1)


def start(service, subscriber: Subscriber) -> RunningService:
    running = RunningService(service)
    assert poll(lambda: service.link is not None and service.link.connected, WAIT_S), "trigger link not connected"
    return running


def test_triggers_with_part_ids_give_verdicts_and_rejects_carrying_them(
    broker: Mosquitto, camera: MjpegCamera, inspector, tmp_path: Path
) -> None:
    config = config_for(ng_station(inspector.config.model.path and Path(inspector.config.model.path), camera.url,
                                   trigger_timeout_s=30.0))  # fmt: skip
    evidence = EvidenceConfig(dir=tmp_path / "evidence", mqtt_snapshot=True)
    service = build_service(config, inspector, broker.port, tmp_path, evidence=evidence)
    subscriber = Subscriber(broker.port)
    running = start(service, subscriber)
    try:
        assert poll(lambda: service.capture.captured > 0, WAIT_S), "the camera delivers no frames"
        sent_at = datetime.now(UTC)
        subscriber.trigger("st", {"part_id": "P-1", "sequence": 1})
        subscriber.trigger("st", {"part_id": "P-2", "sequence": 2})
        subscriber.trigger("st", {"part_id": "P-1", "sequence": 3})  # a duplicate: ignored
        subscriber.trigger("st", {"part_id": "P-3", "sequence": 4})
        verdicts = poll(lambda: len(subscriber.json("verdict")) >= 3 and subscriber.json("verdict"), WAIT_S)
        assert verdicts, "no verdicts for the triggered parts"
        assert [v["source"]["part_id"] for v in verdicts] == ["P-1", "P-2", "P-3"]  # one each, in order
        for verdict in verdicts:
            assert verdict["verdict"] == "NG"
            assert datetime.fromisoformat(verdict["source"]["captured_at"]) > sent_at  # taken after the trigger
            # The verdict names the picture at once; the evidence writer thread writes it (edge/evidence_worker.py).
            assert poll(lambda v=verdict: Path(v["evidence"]).exists(), WAIT_S)
            picture = cv2.imread(verdict["evidence"])
            assert picture is not None and picture.shape[:2] == (192, 256)
        rejects = poll(lambda: len(subscriber.json("reject")) >= 3 and subscriber.json("reject"), WAIT_S)
        assert [r["part_id"] for r in rejects] == ["P-1", "P-2", "P-3"]
        assert {r["verdict_message_id"] for r in rejects} == {v["message_id"] for v in verdicts}
        snapshot = poll(lambda: subscriber.raw("snapshot"), WAIT_S)
        assert snapshot[-1][0][:2] == b"\xff\xd8"  # the last NG picture, a JPEG
        assert service.triggers.counts["duplicate"] == 1
        from prometheus_client import generate_latest

        scraped = generate_latest(service.metrics.registry).decode()
        assert 'inspector_triggers_total{outcome="duplicate"} 1.0' in scraped
        assert 'inspector_triggers_total{outcome="served"} 3.0' in scraped
        assert 'inspector_evidence_total{outcome="saved"}' in scraped
        assert service.live.counts["NG"] == 3  # the live page counts parts, not frames
    finally:
        assert running.stop() == 0
        subscriber.close()


def test_a_trigger_while_the_camera_is_down_gets_uncertain_in_bounded_time(
    broker: Mosquitto, inspector, tmp_path: Path
) -> None:
    dead_camera = f"http://127.0.0.1:{free_port()}/video.mjpg"
    config = config_for(ng_station(Path(inspector.config.model.path), dead_camera, trigger_timeout_s=1.0))
    service = build_service(config, inspector, broker.port, tmp_path)
    subscriber = Subscriber(broker.port)
    running = start(service, subscriber)
    try:
        subscriber.trigger("st", {"part_id": "P-9", "sequence": 9})
        subscriber.trigger("st", {"part_id": "P-8", "sequence": 8})  # out of order: answered at once
        subscriber.trigger("st", b'{"part_id": 42}')  # malformed: no part id to answer for
        verdicts = poll(lambda: len(subscriber.json("verdict")) >= 2 and subscriber.json("verdict"), WAIT_S)
        assert verdicts, "silence: no verdict for a trigger the service could not serve"
        by_part = {v["source"]["part_id"]: v for v in verdicts}
        assert set(by_part) == {"P-8", "P-9"}
        assert all(v["verdict"] == "UNCERTAIN" for v in verdicts)
        assert "out-of-order" in by_part["P-8"]["error"]
        error = by_part["P-9"]["error"]
        assert "not served within 1 s" in error and ("camera" in error or "source unavailable" in error)
        assert subscriber.json("reject") == []
        assert service.triggers.counts["malformed"] == 1
    finally:
        assert running.stop() == 0
        subscriber.close()

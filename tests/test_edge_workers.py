"""The edge workers in-process: bounded queues, capture from real files, inference with the tiny model."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.capture import CaptureWorker
from edge.inference import InferenceWorker, Lane
from edge.publish import PublishWorker
from edge.queues import BoundedQueue
from inspector.config import ReconnectConfig, parse_config
from inspector.frames import Frame
from inspector.sinks.jsonl import JsonlSink
from inspector.sources import open_source

from streams import poll

SIZE = (256, 192)
FAST = ReconnectConfig(initial_s=0.05, max_s=0.2)


def wait_until(predicate: Callable[[], bool]) -> bool:
    return poll(predicate, 30.0)


def write_video(path: Path, frames: int = 12) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, SIZE)
    for i in range(frames):
        writer.write(np.full((SIZE[1], SIZE[0], 3), 10 + i * 15, np.uint8))
    writer.release()
    return path


def station_config(model_dir: Path, **tiling: object) -> dict:
    return {
        "station": {"site": "s", "area": "a", "line": "l", "station": "st"},
        "tiling": {"tile": 256, "overlap": 0.0, "global_view": False, **tiling},
        "model": {"path": str(model_dir)},
        "inspection": {
            "product": "a test surface",
            "defects": {"scratch": {"description": "a thin line"}},
            "max_explanation_tokens": 2,
        },
    }


def test_put_latest_keeps_the_freshest_and_counts_drops() -> None:
    q: BoundedQueue[int] = BoundedQueue(4)
    for i in range(10):
        q.put_latest(i, keep=1)
    assert len(q) == 1 and q.get(0) == 9 and q.dropped == 9
    for i in range(6):
        q.put_latest(i)
    assert [q.get(0) for _ in range(4)] == [2, 3, 4, 5] and q.dropped == 11 and q.high_water == 4


def test_put_wait_blocks_until_room_or_gives_up() -> None:
    q: BoundedQueue[int] = BoundedQueue(1)
    assert q.put_wait(1, lambda: True)
    assert not q.put_wait(2, lambda: False)  # full and told not to wait: refused, not dropped silently
    threading.Timer(0.2, lambda: q.get(0)).start()
    assert q.put_wait(3, lambda: True)
    assert q.get(0) == 3 and q.dropped == 0


def test_capture_gives_every_frame_of_a_file_in_order(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi")
    frames: BoundedQueue[Frame] = BoundedQueue(2)
    opener = lambda: open_source(str(video))  # noqa: E731
    worker = CaptureWorker(opener(), opener, frames, reconnect=FAST)
    worker.start()
    seen = []
    while not (worker.finished.is_set() and len(frames) == 0):
        frame = frames.get(0.1)
        if frame is not None:
            seen.append(frame.index)
            time.sleep(0.01)  # a consumer slower than the file: capture must wait, not drop
    worker.join(10)
    assert seen == list(range(12)) and frames.dropped == 0 and worker.captured == 12


def test_capture_retries_a_source_until_it_appears(tmp_path: Path) -> None:
    video = tmp_path / "later.avi"
    frames: BoundedQueue[Frame] = BoundedQueue(16)
    worker = CaptureWorker(None, lambda: open_source(str(video)), frames, reconnect=FAST)
    worker.start()
    try:
        assert wait_until(lambda: worker.problem is not None)
        assert "does not exist" in (worker.problem or "") and not worker.healthy
        write_video(tmp_path / "partial.avi").rename(video)
        assert wait_until(worker.finished.is_set)
        assert worker.problem is None and worker.captured == 12
    finally:
        worker.stop()
        worker.join(10)


@pytest.fixture(scope="module")
def inspector(tiny_model_dir: Path):
    from inspector.pipeline import build_inspector

    return build_inspector(parse_config(station_config(tiny_model_dir)))


def _frame(index: int, image: np.ndarray) -> Frame:
    return Frame(image, "test", index, datetime.now(UTC))


def test_a_frame_that_cannot_be_inspected_gets_an_uncertain_verdict_and_the_line_goes_on(
    inspector, tmp_path: Path
) -> None:
    frames: BoundedQueue[Frame] = BoundedQueue(8)
    verdicts = BoundedQueue(8)
    sink = JsonlSink(tmp_path / "verdicts.jsonl")
    publisher = PublishWorker(verdicts, [sink])
    lane = Lane("st", inspector, frames, verdicts, publisher.is_alive)
    worker = InferenceWorker(lane)
    good = np.random.default_rng(0).integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    for index, image in enumerate([good, np.zeros((0, 0, 3), np.uint8), good]):
        frames.put_latest(_frame(index, image))
    publisher.start()
    worker.start()
    assert wait_until(lambda: publisher.published == 3)
    worker.stop()
    worker.join(10)
    publisher.stop()
    publisher.join(10)
    sink.close()
    lines = [json.loads(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert [v["source"]["frame_index"] for v in lines] == [0, 1, 2]
    assert lines[1]["verdict"] == "UNCERTAIN" and "empty" in lines[1]["error"]
    assert lines[0]["error"] is None and lines[2]["error"] is None
    assert lane.errors == 1 and lane.inspected == 3
    assert lane.last is not None and lane.last.frame.index == 2


def test_jobs_run_between_frames_even_while_paused(inspector) -> None:
    frames: BoundedQueue[Frame] = BoundedQueue(2)
    verdicts = BoundedQueue(2)
    worker = InferenceWorker(Lane("st", inspector, frames, verdicts, lambda: True))
    worker.lane.paused.set()
    worker.start()
    try:
        assert worker.call_between_frames(threading.current_thread, 30).name == "inference"
        with pytest.raises(ValueError, match="boom"):
            worker.call_between_frames(lambda: (_ for _ in ()).throw(ValueError("boom")), 30)
    finally:
        worker.stop()
        worker.join(10)
    with pytest.raises(RuntimeError, match="not running"):
        worker.call_between_frames(lambda: None)


def test_a_sink_that_raises_fails_the_verdict_which_is_kept_in_the_spill_file(inspector, tmp_path: Path) -> None:
    """/dev/full is a real full disk: the JSONL sink raises ENOSPC on every verdict."""
    verdicts = BoundedQueue(8)
    good, full = JsonlSink(tmp_path / "ok.jsonl"), JsonlSink(Path("/dev/full"))
    spill = tmp_path / "undelivered.jsonl"
    publisher = PublishWorker(verdicts, [good, full], spill=spill, retries=1, retry_delay_s=0.0)
    lane = Lane("st", inspector, BoundedQueue(8), verdicts, publisher.is_alive)
    worker = InferenceWorker(lane)
    image = np.random.default_rng(0).integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    for index in range(3):
        lane.frames.put_latest(_frame(index, image))
    publisher.start()
    worker.start()
    assert wait_until(lambda: publisher.failed == 3)
    worker.stop()
    worker.join(10)
    publisher.stop()
    publisher.join(10)
    good.close()
    assert publisher.published == 0 and publisher.spilled == 3 and publisher.lost == 0  # failed, not published
    assert publisher.failures == 6 and publisher.sink_failures == {"JsonlSink": 6}  # one retry each
    assert publisher.consecutive_failed == 3 and publisher.by_verdict == {"OK": 0, "NG": 0, "UNCERTAIN": 0}
    kept = [json.loads(line) for line in spill.read_text().splitlines()]
    assert [v["source"]["frame_index"] for v in kept] == [0, 1, 2]  # nothing lost: every verdict is in the spill
    assert len((tmp_path / "ok.jsonl").read_text().splitlines()) == 3  # the healthy sink still got them


def test_a_verdict_the_spill_file_cannot_keep_either_is_counted_lost(inspector, tmp_path: Path) -> None:
    verdicts = BoundedQueue(8)
    publisher = PublishWorker(verdicts, [JsonlSink(Path("/dev/full"))], spill=Path("/dev/full"), retries=0)
    lane = Lane("st", inspector, BoundedQueue(8), verdicts, publisher.is_alive)
    worker = InferenceWorker(lane)
    lane.frames.put_latest(_frame(0, np.zeros((SIZE[1], SIZE[0], 3), np.uint8)))
    publisher.start()
    worker.start()
    assert wait_until(lambda: publisher.lost == 1)
    worker.stop()
    worker.join(10)
    publisher.stop()
    publisher.join(10)
    assert (publisher.published, publisher.failed, publisher.spilled) == (0, 1, 0)

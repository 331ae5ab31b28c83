"""Issue 17 item 9: a live stream's frames are dated by the stream's timestamps, not by when they were decoded.

A real video file decoded by OpenCV's FFmpeg backend plays the stream (its PTS are real); the
wall clock is injected and plays the network: the first frames arrive 20 ms after they were
taken, then a stall, then the rest in one burst. Before the fix every frame of the burst was
dated at its decode time, after a trigger that came during the stall.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.config import ReconnectConfig
from inspector.sources import LiveSource

FPS = 10.0
FRAMES = 10
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def write_numbered_video(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    for i in range(FRAMES):
        writer.write(np.full((48, 64, 3), 20 * i + 10, np.uint8))
    writer.release()
    return path


def test_a_buffered_burst_is_dated_when_it_was_taken(tmp_path: Path) -> None:
    video = write_numbered_video(tmp_path / "stream.avi")
    # Frame i taken at i/FPS; frames 0-4 arrive 20 ms later, frames 5-9 all at 1.1 s (after a stall).
    arrivals = [i / FPS + 0.02 for i in range(5)] + [1.1] * 5
    ticks = itertools.chain(arrivals, itertools.count(2.0, 0.1))  # a reopened file: later, any time
    clock = lambda: T0 + timedelta(seconds=next(ticks))  # noqa: E731
    source = LiveSource(str(video), clock=clock, reconnect=ReconnectConfig(initial_s=5.0, max_s=5.0), poll_s=0.05)
    try:
        frames = []
        while len(frames) < FRAMES and (frame := source.read(5)) is not None:
            frames.append(frame)
            if frame.index == FRAMES - 1:
                break
    finally:
        source.close()
    assert frames, "the stream delivered nothing"
    for frame in frames:  # the reader keeps only the freshest: whichever frames we got
        taken = T0 + timedelta(seconds=frame.index / FPS + 0.02)
        assert abs((frame.captured_at - taken).total_seconds()) < 1e-3, (frame.index, frame.captured_at)
        assert frame.meta["stream_pts_s"] == pytest.approx(frame.index / FPS)
    # The burst's last frame was taken at 0.92 s, not at its 1.1 s decode: a trigger at 1.0 s is after it.
    assert max(f.captured_at for f in frames) < T0 + timedelta(seconds=1.0)

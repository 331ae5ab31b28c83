"""Live sources (camera index, RTSP/HTTP): a reader thread keeps the freshest frame and reconnects."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlsplit

import cv2
import numpy as np

from inspector.backoff import Backoff
from inspector.config import ReconnectConfig
from inspector.errors import SourceError
from inspector.sources.base import (
    LIVE_MAX_BAD_READS,
    STREAM_SCHEMES,
    capture_fps,
    open_capture,
    read_frame,
    redact_uri,
    utcnow,
)
from inspector.sources.threaded import ThreadedSource

log = logging.getLogger(__name__)


class LiveSource(ThreadedSource):
    """A camera or network stream read by a background thread that keeps only the freshest frame.

    ``index`` counts frames decoded from the device since the source opened (across
    reconnects), so gaps show frames dropped as stale. Iteration waits for a new frame,
    waking every ``poll_s`` to notice ``close()``; ``read(timeout_s)`` returns None on timeout.
    With ``wait_for_first`` a source that cannot be opened at start is retried in the
    background (``healthy`` stays False) instead of raising ``SourceError``.
    ``target`` may be any string OpenCV's FFmpeg backend opens, a video file included
    (how the tests exercise reconnection: a file "stream" ends and is reopened).
    ``captured_at`` comes from the stream's own timestamps (OpenCV's ``CAP_PROP_POS_MSEC``: RTSP
    and file PTS, V4L2 buffer times) through ``StreamClock``, so frames that sat in a buffer are
    dated when they were taken, not when they were decoded; ``clock`` is the wall clock (tests).
    """

    def __init__(
        self,
        target: str | int,
        source_id: str | None = None,
        *,
        reconnect: ReconnectConfig | None = None,
        wait_for_first: bool = False,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        poll_s: float = 0.5,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(source_id or _live_id(target), keep=1, poll_s=poll_s, clock=clock)
        self.target = target
        self.reconnect = reconnect or ReconnectConfig()
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        cap = self._try_open()
        if cap is None:
            if not wait_for_first:
                raise SourceError(*self._open_failure())
            log.warning("%s: not available yet; retrying in the background", self.source_id)
        else:
            self._connected = True
            self.fps = capture_fps(cap)
        self._start_thread(self._run, cap)

    def _try_open(self) -> cv2.VideoCapture | None:
        return open_capture(self.target, open_timeout_s=self.open_timeout_s, read_timeout_s=self.read_timeout_s)

    def _open_failure(self) -> tuple[str, str]:
        """Problem and hint for a source that would not open, as specific as we can tell."""
        if isinstance(self.target, int):
            return (
                f"camera {self.target} cannot be opened (no such device, or it is busy)",
                "check the camera is connected and not used by another process; `v4l2-ctl --list-devices` "
                "lists /dev/video* indices",
            )
        parts = urlsplit(self.target)
        if parts.scheme.lower() in STREAM_SCHEMES and parts.hostname:
            default_port = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}[parts.scheme.lower()]
            try:
                port = parts.port or default_port
            except ValueError:
                return (f"stream {self.source_id} has an invalid port", "write the URL as scheme://host:port/path")
            try:
                with socket.create_connection((parts.hostname, port), timeout=min(self.open_timeout_s, 3.0)):
                    pass
            except OSError as error:
                return (
                    f"stream {self.source_id} is unreachable: cannot connect to {parts.hostname}:{port} "
                    f"({error.strerror or error})",
                    "check the camera is powered and on the network, and the host and port in the URL",
                )
            return (
                f"stream {self.source_id}: the server answers at {parts.hostname}:{port} but no video stream "
                f"could be opened within {self.open_timeout_s:g} s",
                "check the path, the credentials and that the codec is one FFmpeg decodes (H.264/H.265/MJPEG)",
            )
        return (f"live source {self.source_id} cannot be opened", "check the path or URL")

    def _run(self, cap: cv2.VideoCapture | None) -> None:
        backoff = Backoff.from_policy(self.reconnect)
        ever_connected = cap is not None
        bad = 0
        last_good = time.monotonic()
        try:
            while not self._closed.is_set():
                if cap is None:
                    cap = self._try_open()
                    if cap is None:
                        delay = backoff.next_delay()
                        log.debug("%s: open failed; retrying in %.2f s", self.source_id, delay)
                        self._closed.wait(delay)
                        continue
                    if ever_connected:
                        self.stats.reconnects += 1
                        log.info("%s: reconnected", self.source_id)
                    ever_connected = True
                    self.fps = capture_fps(cap) or self.fps
                    self._stream_clock.reset()  # a reopened stream counts its time afresh
                    self._connected = True
                    bad = 0
                    last_good = time.monotonic()
                image = read_frame(cap)
                if self._closed.is_set():
                    break
                if image is None:
                    bad += 1
                    if bad < LIVE_MAX_BAD_READS and time.monotonic() - last_good < self.read_timeout_s:
                        continue
                    cap.release()
                    cap = None
                    self._connected = False
                    delay = backoff.next_delay()
                    log.warning("%s: stream lost or ended; reconnecting in %.2f s", self.source_id, delay)
                    self._closed.wait(delay)
                    continue
                if bad:
                    self.stats.frames_skipped_corrupt += bad
                    bad = 0
                # A good frame proves the connection: the next failure starts the backoff afresh.
                backoff.reset()
                last_good = time.monotonic()
                self._publish(image, _position_s(cap))
        except Exception:  # the reader must not die silently: log, mark unhealthy, stop
            log.exception("%s: reader thread failed", self.source_id)
        finally:
            if cap is not None:
                cap.release()
            self._thread_ended()

    def _publish(self, image: np.ndarray, position_s: float | None) -> None:
        meta: dict[str, object] = {} if position_s is None else {"stream_pts_s": position_s}
        self._emit(image, stream_time_s=position_s, meta=meta)


def _position_s(cap: cv2.VideoCapture) -> float | None:
    """The decoded frame's stream time in seconds, None when the backend has none."""
    try:
        position_ms = float(cap.get(cv2.CAP_PROP_POS_MSEC))
    except cv2.error:
        return None
    return position_ms / 1000.0 if position_ms == position_ms and position_ms >= 0 else None


def _live_id(target: str | int) -> str:
    return f"camera:{target}" if isinstance(target, int) else redact_uri(target)

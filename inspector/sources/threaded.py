"""What the live sources share: one background thread talks to the device, the consumer takes frames.

``LiveSource`` (OpenCV streams) and ``CameraSource`` (GenICam) differ in how they read and
reconnect; the rest is here, once: the bounded frame queue (``keep=1``: only the freshest frame,
older ones counted stale; more: each frame in order), waiting for a frame while noticing
``close()`` and a thread that died, the frames' index and capture time, and stopping the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime

import numpy as np

from inspector.errors import SourceError
from inspector.frames import Frame
from inspector.sources.base import FrameSource
from inspector.sources.clock import StreamClock

log = logging.getLogger(__name__)


class ThreadedSource(FrameSource):
    """A live source fed by its own thread (started by ``_start_thread``) through a bounded queue.

    Iteration waits for a frame, waking every ``poll_s`` to notice ``close()``; it ends with
    ``SourceError`` when the thread died (logged where it happened) so the owner reopens the source.
    """

    is_live = True
    thread_role = "reader"  # names the thread in errors and logs
    close_timeout_s = 2.0
    _thread: threading.Thread

    def __init__(self, source_id: str, *, keep: int, poll_s: float, clock: Callable[[], datetime]) -> None:
        super().__init__(source_id)
        self.poll_s = poll_s
        self._clock = clock
        # Frames are dated by the device's own timestamps where it has them; reset on every reconnect.
        self._stream_clock = StreamClock()
        self._cond = threading.Condition()
        self._frames: deque[Frame] = deque(maxlen=keep)
        self._connected = False
        self._seq = 0

    @property
    def healthy(self) -> bool:
        return self._connected and not self._closed.is_set()

    # -- the device thread's side --------------------------------------------------------------

    def _start_thread(self, run: Callable[..., None], *args: object) -> None:
        """Start ``run(*args)`` as the one thread that talks to the device; it ends with ``_thread_ended()``."""
        self._thread = threading.Thread(target=run, args=args, name=f"source:{self.source_id}", daemon=True)
        self._thread.start()

    def _emit(
        self,
        image: np.ndarray,
        *,
        stream_time_s: float | None,
        meta: dict[str, object],
        part_id: str | None = None,
    ) -> None:
        """Queue ``image`` as the next frame; a full queue drops (and counts) its oldest, now stale."""
        captured_at = self._stream_clock.stamp(stream_time_s, self._clock())
        frame = Frame(
            image=image, source_id=self.source_id, index=self._seq, captured_at=captured_at,
            part_id=part_id, meta=meta,
        )  # fmt: skip
        self._seq += 1
        self.stats.frames_read += 1
        with self._cond:
            if len(self._frames) == self._frames.maxlen:
                self.stats.dropped_stale += 1  # nobody took the oldest: it is stale now
            self._frames.append(frame)
            self._cond.notify_all()

    def _thread_ended(self) -> None:
        """Last thing the thread does, however it ends: unhealthy, and waiting readers woken."""
        self._connected = False
        with self._cond:
            self._cond.notify_all()

    # -- the consumer's side -------------------------------------------------------------------

    def read(self, timeout_s: float | None = None) -> Frame | None:
        """The next frame (the freshest, with ``keep=1``), waiting up to ``timeout_s``; None on time-out or close."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._frames:
                if self._closed.is_set() or not self._thread.is_alive():
                    return None
                remaining = self.poll_s if deadline is None else min(self.poll_s, deadline - time.monotonic())
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._frames.popleft()

    def __next__(self) -> Frame:
        while not self._closed.is_set():
            frame = self.read(self.poll_s)
            if frame is not None:
                return frame
            if not self._thread.is_alive() and not self._closed.is_set():
                raise SourceError(
                    f"{self.source_id}: the {self.thread_role} thread stopped unexpectedly", "reopen the source"
                )
        raise StopIteration

    def close(self, timeout_s: float | None = None) -> None:
        """Stop the thread; one blocked inside the device's SDK finishes on its own (a daemon thread)."""
        super().close()
        with self._cond:
            self._cond.notify_all()
        thread = getattr(self, "_thread", None)  # None when opening failed before it started
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.close_timeout_s if timeout_s is None else timeout_s)
            if thread.is_alive():
                log.debug("%s: the %s thread is still in a device call; it exits after it", self.source_id,
                          self.thread_role)  # fmt: skip

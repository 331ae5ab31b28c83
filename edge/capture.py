"""The capture worker: it owns the source and moves its frames into the frame queue.

It reopens the source with backoff when it fails, and for live sources the frame queue
keeps only the freshest frame (the oldest is dropped and counted), so inspection always
looks at what the line shows *now*. File sources block instead: every frame is inspected.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import fields

from edge.queues import BoundedQueue
from inspector.backoff import Backoff
from inspector.config import ReconnectConfig, SourceConfig
from inspector.errors import InspectorError
from inspector.frames import Frame
from inspector.sources import FrameSource, SourceStats, open_source

log = logging.getLogger(__name__)

SourceOpener = Callable[[], FrameSource]


class CaptureWorker(threading.Thread):
    """Source -> frame queue; reopens the source with backoff; ``finished`` once a file source ends."""

    def __init__(
        self,
        source: FrameSource | None,
        opener: SourceOpener,
        frames: BoundedQueue[Frame],
        *,
        reconnect: ReconnectConfig,
    ) -> None:
        super().__init__(name="capture", daemon=True)
        self._source = source
        self._opener = opener
        self._frames = frames
        self._reconnect = reconnect
        self._stop_event = threading.Event()
        self._reopen = threading.Event()
        self._lock = threading.Lock()
        self.finished = threading.Event()
        self.captured = 0
        self.problem: str | None = None  # why the source is not delivering, for the status reason
        self._retired = SourceStats()  # counters of sources closed so far (reopens, reloads)

    # -- control, from other threads -----------------------------------------------------------

    def stop(self) -> None:
        self._stop_event.set()
        self._close_current()

    def switch_source(self, opener: SourceOpener) -> None:
        """Close the current source and continue with ``opener`` (a reloaded source section)."""
        with self._lock:
            self._opener = opener
        self._reopen.set()
        self._close_current()

    # -- figures -------------------------------------------------------------------------------

    @property
    def source(self) -> FrameSource | None:
        return self._source

    @property
    def healthy(self) -> bool:
        source = self._source
        return source is not None and source.healthy and self.problem is None

    def reason(self) -> str | None:
        """Why frames are not coming, in words: the opener's failure, else the source's own (a camera's)."""
        source = self._source
        return self.problem or (source.problem if source is not None and not source.healthy else None)

    def stats(self) -> SourceStats:
        """Counters summed over every source this worker has opened."""
        with self._lock:
            total = SourceStats(**{f.name: getattr(self._retired, f.name) for f in fields(SourceStats)})
            if self._source is not None:
                _add_stats(total, self._source.stats)
        return total

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        backoff = Backoff.from_policy(self._reconnect)
        while not self._stop_event.is_set():
            source = self._source
            if source is None or source.closed:
                source = self._open(backoff)
                if source is None:
                    continue
            delivered = self.captured
            ended = self._pump(source)
            if self.captured > delivered:  # it worked for a while: the next failure starts the backoff afresh
                backoff.reset()
            if self._stop_event.is_set():
                break
            if self._reopen.is_set():
                self._reopen.clear()
                self._retire()
                continue
            if ended and not source.is_live:
                log.info("%s: end of source", source.source_id)
                self.finished.set()
                break
            # A live source ends its iteration only when closed or broken: reopen it after a pause.
            self._retire()
            self._stop_event.wait(backoff.next_delay())
        self._retire()

    def _open(self, backoff: Backoff) -> FrameSource | None:
        with self._lock:
            opener = self._opener
        try:
            source = opener()
        except InspectorError as error:
            self.problem = f"source unavailable: {error.problem}"
        except Exception as error:  # noqa: BLE001 - OpenCV and OS errors: keep retrying, say why
            self.problem = f"source unavailable: {type(error).__name__}: {error}"
        else:
            with self._lock:
                self._source = source
            self.problem = None
            return source
        delay = backoff.next_delay()
        log.warning("%s; retrying in %.1f s", self.problem, delay)
        self._stop_event.wait(delay)
        return None

    def _pump(self, source: FrameSource) -> bool:
        """Move frames until the source ends (True) or fails / is closed / we stop (False)."""
        keep_waiting = lambda: not (self._stop_event.is_set() or self._reopen.is_set())  # noqa: E731
        try:
            for frame in source:
                if source.is_live and not source.keeps_every_frame:
                    self._frames.put_latest(frame, keep=1)  # only the freshest frame is worth inspecting
                elif not self._frames.put_wait(frame, keep_waiting):
                    return False
                self.captured += 1
                self.problem = None
            return not source.closed
        except Exception as error:  # noqa: BLE001 - a broken source must not kill capture
            self.problem = f"source failed: {type(error).__name__}: {error}"
            log.exception("%s: reading failed; reopening", source.source_id)
            return False

    def _close_current(self) -> None:
        source = self._source
        if source is not None:
            _close_quietly(source)

    def _retire(self) -> None:
        """Close the current source and fold its counters into the running totals."""
        with self._lock:
            source, self._source = self._source, None
            if source is not None:
                _add_stats(self._retired, source.stats)
        if source is not None:
            _close_quietly(source)


def _add_stats(total: SourceStats, more: SourceStats) -> None:
    for f in fields(SourceStats):
        value = getattr(more, f.name)
        if isinstance(value, bool):
            setattr(total, f.name, getattr(total, f.name) or value)
        else:
            setattr(total, f.name, getattr(total, f.name) + value)


def _close_quietly(source: FrameSource) -> None:
    try:
        source.close()
    except Exception:  # noqa: BLE001 - closing is best effort
        log.debug("closing %s failed", source.source_id, exc_info=True)


def source_opener(config: SourceConfig) -> SourceOpener:
    """How (re)opening the configured source is done; live sources start even while the camera is down."""
    if config.uri is None:
        from inspector.errors import ConfigError

        raise ConfigError("no source to inspect", "set source.uri in the config or pass --source")
    uri = config.uri

    def opener() -> FrameSource:
        return open_source(
            uri, pace=config.pace, loop=config.loop, reconnect=config.reconnect, wait_for_first=True,
            camera=config.camera,
        )  # fmt: skip

    return opener

"""The three workers of the edge service, joined by bounded queues.

    CaptureWorker ──FrameQueue──▶ InferenceWorker ──VerdictQueue──▶ PublishWorker ──▶ sinks

- Capture owns the source: it reopens it with backoff when it fails, and for live sources
  the frame queue keeps only the freshest frames (the oldest is dropped and counted), so
  inspection always looks at what the line shows *now*. File sources block instead: every
  frame is inspected.
- Inference owns the model. Anything that must not race with it (a config reload, a trial
  inspection) runs on its thread between two frames (``call_between_frames``). A frame
  whose inspection raises gets an UNCERTAIN verdict carrying the error; the loop goes on.
- Publish hands verdicts to the sinks; it never drops one, so inference waits when it is
  full (and a live source drops frames instead). On stop it drains what is queued.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

from inspector.config import ReconnectConfig
from inspector.errors import InspectorError
from inspector.frames import Frame
from inspector.pipeline import Inspector
from inspector.sinks.base import Sink
from inspector.sources import FrameSource, SourceStats, backoff_delays
from inspector.payloads.verdict import FrameVerdict

log = logging.getLogger(__name__)

T = TypeVar("T")
# How often blocked workers look up to notice a stop request.
_POLL_S = 0.1


class BoundedQueue(Generic[T]):
    """A FIFO of at most ``maxsize`` items: ``put_latest`` evicts the oldest, ``put_wait`` waits for room."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.high_water = 0

    def __len__(self) -> int:
        return len(self._items)

    def put_latest(self, item: T, keep: int | None = None) -> None:
        """Queue ``item``, evicting the oldest so that at most ``keep`` (default maxsize) items remain."""
        limit = min(self.maxsize, keep or self.maxsize)
        with self._cond:
            while len(self._items) >= limit:
                self._items.popleft()
                self.dropped += 1
            self._append(item)

    def put_wait(self, item: T, keep_waiting: Callable[[], bool]) -> bool:
        """Wait for room while ``keep_waiting()``; False when it gave up (the item was not queued)."""
        with self._cond:
            while len(self._items) >= self.maxsize:
                if not keep_waiting():
                    return False
                self._cond.wait(_POLL_S)
            self._append(item)
            return True

    def get(self, timeout_s: float) -> T | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout_s)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def clear(self) -> int:
        """Remove everything queued; returns how many items were discarded."""
        with self._cond:
            count = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return count

    def _append(self, item: T) -> None:
        self._items.append(item)
        self.high_water = max(self.high_water, len(self._items))
        self._cond.notify_all()


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

    def stats(self) -> SourceStats:
        """Counters summed over every source this worker has opened."""
        with self._lock:
            total = SourceStats(**{f.name: getattr(self._retired, f.name) for f in fields(SourceStats)})
            if self._source is not None:
                _add_stats(total, self._source.stats)
        return total

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        delays = backoff_delays(self._reconnect.initial_s, self._reconnect.max_s)
        while not self._stop_event.is_set():
            source = self._source
            if source is None or source.closed:
                source = self._open(delays)
                if source is None:
                    continue
            delivered = self.captured
            ended = self._pump(source)
            if self.captured > delivered:  # it worked for a while: the next failure starts the backoff afresh
                delays = backoff_delays(self._reconnect.initial_s, self._reconnect.max_s)
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
            self._stop_event.wait(next(delays))
        self._retire()

    def _open(self, delays: Iterator[float]) -> FrameSource | None:
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
        delay = next(delays)
        log.warning("%s; retrying in %.1f s", self.problem, delay)
        self._stop_event.wait(delay)
        return None

    def _pump(self, source: FrameSource) -> bool:
        """Move frames until the source ends (True) or fails / is closed / we stop (False)."""
        keep_waiting = lambda: not (self._stop_event.is_set() or self._reopen.is_set())  # noqa: E731
        try:
            for frame in source:
                if source.is_live:
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


@dataclass
class Inspected:
    """The most recent frame and its verdict: what a snapshot saves."""

    frame: Frame
    verdict: FrameVerdict


class InferenceWorker(threading.Thread):
    """Frame queue -> inspector -> verdict queue, one frame at a time; jobs run between frames."""

    def __init__(
        self,
        inspector: Inspector,
        frames: BoundedQueue[Frame],
        verdicts: BoundedQueue[FrameVerdict],
        *,
        publisher_alive: Callable[[], bool],
        observe_latency: Callable[[float], None] = lambda ms: None,
    ) -> None:
        super().__init__(name="inference", daemon=True)
        self.inspector = inspector
        self._frames = frames
        self._verdicts = verdicts
        self._publisher_alive = publisher_alive
        self._observe_latency = observe_latency
        self._stop_event = threading.Event()
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._drain = False
        self.paused = threading.Event()
        self.busy_since: float | None = None  # monotonic start of the frame being inspected
        self.last: Inspected | None = None
        self.inspected = 0
        self.errors = 0
        self.lost = 0  # verdicts that could not be queued because the publisher was gone

    def stop(self, *, drain: bool = False) -> None:
        """Finish the frame in flight (with ``drain``: every queued frame, even when paused), then exit."""
        self._drain = drain
        self._stop_event.set()

    def call_between_frames(self, job: Callable[[], T], timeout_s: float | None = None) -> T:
        """Run ``job`` on the inference thread before the next frame; its result or its exception."""
        future: Future[T] = Future()
        if not self.is_alive():
            raise RuntimeError("the inference worker is not running")
        self._jobs.put((job, future))
        try:
            return future.result(timeout_s)
        except TimeoutError:
            if future.cancel():  # still queued: it will never run, so nothing changed
                raise
            return future.result()  # already running: it is short, and its effect must be reported

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self._run_jobs()
                if self.paused.is_set():
                    self._stop_event.wait(_POLL_S)
                    continue
                frame = self._frames.get(_POLL_S)
                if frame is not None:
                    self._handle(frame)
            while self._drain and (frame := self._frames.get(0)) is not None:
                self._handle(frame)
        finally:
            self._fail_pending_jobs()

    def stalled_s(self) -> float:
        """How long the frame in flight has been inspected so far (0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else time.monotonic() - since

    def _handle(self, frame: Frame) -> None:
        self.busy_since = time.monotonic()
        try:
            self._inspect(frame)
        finally:
            self.busy_since = None

    def _inspect(self, frame: Frame) -> None:
        began = time.perf_counter()
        try:
            verdict = self.inspector.inspect(frame)
        except Exception as error:  # noqa: BLE001 - one bad frame must not stop the line
            self.errors += 1
            log.error(
                "frame %d of %s could not be inspected: %s: %s",
                frame.index,
                frame.source_id,
                type(error).__name__,
                error,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            verdict = self.inspector.error_verdict(frame, error)
        self._observe_latency((time.perf_counter() - began) * 1000)
        self.inspected += 1
        self.last = Inspected(frame, verdict)
        # Never drop a verdict: wait for the publisher, unless it is gone for good.
        if not self._verdicts.put_wait(verdict, self._publisher_alive):
            self.lost += 1
            log.error("publisher stopped; verdict %s for frame %d not published", verdict.message_id, frame.index)

    def _run_jobs(self) -> None:
        while True:
            try:
                job, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as error:  # noqa: BLE001 - handed back to the caller
                future.set_exception(error)

    def _fail_pending_jobs(self) -> None:
        while True:
            try:
                _job, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError("the service is shutting down"))


class PublishWorker(threading.Thread):
    """Verdict queue -> every sink. A failing sink is logged and counted; the others still get it."""

    def __init__(self, verdicts: BoundedQueue[FrameVerdict], sinks: Sequence[Sink]) -> None:
        super().__init__(name="publish", daemon=True)
        self._verdicts = verdicts
        self._sinks = list(sinks)
        self._stop_event = threading.Event()
        self.published = 0
        self.failures = 0
        self.by_verdict: dict[str, int] = {"OK": 0, "NG": 0, "UNCERTAIN": 0}

    def stop(self) -> None:
        """Publish what is queued, then exit."""
        self._stop_event.set()

    def run(self) -> None:
        while True:
            verdict = self._verdicts.get(_POLL_S)
            if verdict is None:
                if self._stop_event.is_set():
                    return
                continue
            for sink in self._sinks:
                try:
                    sink.publish(verdict)
                except Exception as error:  # noqa: BLE001 - one sink's trouble must not starve the others
                    self.failures += 1
                    log.error("%s could not take verdict %s: %s", type(sink).__name__, verdict.message_id, error)
            self.published += 1
            self.by_verdict[verdict.verdict] = self.by_verdict.get(verdict.verdict, 0) + 1

"""The three workers of the edge service, joined by bounded queues.

    CaptureWorker ──FrameQueue──▶ InferenceWorker ──VerdictQueue──▶ PublishWorker ──▶ sinks

- Capture owns the source: it reopens it with backoff when it fails, and for live sources
  the frame queue keeps only the freshest frames (the oldest is dropped and counted), so
  inspection always looks at what the line shows *now*. File sources block instead: every
  frame is inspected.
- Inference owns the model. It serves one ``Lane`` per station (one process may serve
  several cameras with one model) and batches the tiles of all lanes' frames together.
  Anything that must not race with it (a config reload, a trial inspection) runs on its
  thread between two rounds (``call_between_frames``). A frame whose inspection raises
  gets an UNCERTAIN verdict carrying the error; the loop goes on. In triggered mode a
  lane judges only frames taken after a part's trigger (edge/triggers.py).
- Publish hands verdicts to the sinks; it never drops one, so inference waits when it is
  full (and a live source drops frames instead). On stop it drains what is queued.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

import numpy as np

from edge.triggers import PendingTrigger, TriggerBook
from inspector.backoff import Backoff
from inspector.classify import StageTimes
from inspector.config import ReconnectConfig
from inspector.errors import InspectorError
from inspector.frames import Frame
from inspector.payloads.verdict import FrameVerdict
from inspector.pipeline import Inspector, PreparedFrame
from inspector.runtime import failed_frame
from inspector.sinks.base import Sink
from inspector.sources import FrameSource, SourceStats

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
        self.doorbell: threading.Event | None = None  # set on every put (the inference worker waits on it)

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
        if self.doorbell is not None:
            self.doorbell.set()


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


@dataclass(frozen=True)
class Outgoing:
    """A verdict on its way to the sinks, with its frame when it has one (the live page draws it)."""

    verdict: FrameVerdict
    frame: Frame | None = None


def _same(frame: Frame, verdict: FrameVerdict) -> FrameVerdict:
    return verdict


@dataclass(eq=False)
class Lane:
    """One station's path through the inference worker: its frames in, its verdicts out.

    Without ``triggers`` every frame is judged (free-running). With them, only frames captured
    after the oldest waiting trigger are, carrying its part id; the others are passed over.
    ``finish`` runs on each verdict before it is queued (evidence pictures).
    """

    name: str
    inspector: Inspector
    frames: BoundedQueue[Frame]
    verdicts: BoundedQueue[Outgoing]
    publisher_alive: Callable[[], bool]
    observe_latency: Callable[[float], None] = lambda ms: None
    triggers: TriggerBook | None = None
    finish: Callable[[Frame, FrameVerdict], FrameVerdict] = _same
    paused: threading.Event = field(default_factory=threading.Event)
    last: Inspected | None = None
    inspected: int = 0
    errors: int = 0
    lost: int = 0  # verdicts that could not be queued because the publisher was gone
    passed_over: int = 0  # triggered mode: frames no part was waiting for

    def emit(self, verdict: FrameVerdict, frame: Frame | None = None) -> None:
        """Queue a verdict for the publisher; never drops one unless the publisher is gone for good."""
        if not self.verdicts.put_wait(Outgoing(verdict, frame), self.publisher_alive):
            self.lost += 1
            log.error("%s: publisher stopped; verdict %s not published", self.name, verdict.message_id)

    def next_frame(self) -> tuple[Frame, PendingTrigger | None] | None:
        """The next frame to judge (and the part it is for), or None."""
        if self.triggers is None:
            frame = self.frames.get(0)
            return None if frame is None else (frame, None)
        trigger = self.triggers.current()
        if trigger is None:
            self.passed_over += self.frames.clear()
            return None
        while (frame := self.frames.get(0)) is not None:
            if frame.captured_at > trigger.received_at:  # taken after the trigger: this part
                return dataclasses.replace(frame, part_id=trigger.part_id), trigger
            self.passed_over += 1
        return None


@dataclass
class _Work:
    lane: Lane
    frame: Frame
    trigger: PendingTrigger | None
    prepared: PreparedFrame | None = None


class InferenceWorker(threading.Thread):
    """Frames of every lane -> the model -> verdicts; jobs run between rounds.

    Each round takes at most one frame per lane (the freshest, for live sources), so a dead or
    slow camera never holds the others up, and classifies the tiles of all of them together:
    lanes whose inspectors share a backend, a prompt and a tile size go through the model as
    one batch (``model.batch_size`` tiles per call). The timings of a batched frame are its
    batch's.
    """

    def __init__(self, lanes: Lane | Sequence[Lane]) -> None:
        super().__init__(name="inference", daemon=True)
        self.lanes: list[Lane] = [lanes] if isinstance(lanes, Lane) else list(lanes)
        self.doorbell = threading.Event()  # rung by the lanes' queues and trigger books
        for lane in self.lanes:
            lane.frames.doorbell = self.doorbell
            if lane.triggers is not None:
                lane.triggers.doorbell = self.doorbell
        self._stop_event = threading.Event()
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._drain = False
        self.busy_since: float | None = None  # monotonic start of the round being inspected
        self.rounds = 0

    @property
    def lane(self) -> Lane:
        """The only lane (single-station services)."""
        if len(self.lanes) != 1:
            raise ValueError(f"this worker has {len(self.lanes)} lanes")
        return self.lanes[0]

    def stop(self, *, drain: bool = False) -> None:
        """Finish the round in flight (with ``drain``: every queued frame, even when paused), then exit."""
        self._drain = drain
        self._stop_event.set()
        self.doorbell.set()

    def call_between_frames(self, job: Callable[[], T], timeout_s: float | None = None) -> T:
        """Run ``job`` on the inference thread before the next round; its result or its exception."""
        future: Future[T] = Future()
        if not self.is_alive():
            raise RuntimeError("the inference worker is not running")
        self._jobs.put((job, future))
        self.doorbell.set()
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
                self.doorbell.clear()  # before looking: a frame queued from now on rings again
                work = self._collect()
                if work:
                    self._round(work)
                else:
                    self.doorbell.wait(_POLL_S)
            while self._drain and (work := self._collect(include_paused=True, free_running_only=True)):
                self._round(work)
        finally:
            self._fail_pending_jobs()

    def stalled_s(self) -> float:
        """How long the round in flight has been inspected so far (0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else time.monotonic() - since

    # -- one round -----------------------------------------------------------------------------

    def _collect(self, *, include_paused: bool = False, free_running_only: bool = False) -> list[_Work]:
        work = []
        for lane in self.lanes:
            if (lane.paused.is_set() and not include_paused) or (free_running_only and lane.triggers is not None):
                continue
            item = lane.next_frame()
            if item is not None:
                work.append(_Work(lane, *item))
        return work

    def _round(self, work: list[_Work]) -> None:
        self.busy_since = time.monotonic()
        try:
            groups: dict[tuple[Any, ...], list[_Work]] = {}
            for item in work:
                try:
                    item.prepared = item.lane.inspector.prepare(item.frame)
                except Exception as error:  # noqa: BLE001 - one bad frame must not stop the line
                    self._failed(item, error)
                    continue
                groups.setdefault(_batch_key(item.lane.inspector, item.prepared), []).append(item)
            for items in groups.values():
                self._classify(items)
            self.rounds += 1
        finally:
            self.busy_since = None

    def _classify(self, items: list[_Work]) -> None:
        classifier = items[0].lane.inspector.classifier
        prepared = [item.prepared for item in items if item.prepared is not None]
        pixel_values = (
            prepared[0].pixel_values if len(prepared) == 1 else np.concatenate([p.pixel_values for p in prepared])
        )
        times = StageTimes()
        try:
            results = classifier.classify(pixel_values, prepared[0].grid, times)
        except Exception as error:  # noqa: BLE001 - the batch's frames get UNCERTAIN, the line goes on
            for item in items:
                self._failed(item, error)
            return
        start = 0
        for item, ready in zip(items, prepared):
            count = len(ready.tiles)
            try:
                verdict = item.lane.inspector.conclude(ready, results[start : start + count], times)
            except Exception as error:  # noqa: BLE001
                self._failed(item, error)
            else:
                self._deliver(item, verdict)
            start += count

    def _failed(self, item: _Work, error: BaseException) -> None:
        item.lane.errors += 1
        # The station runtime's error policy, as in replay: UNCERTAIN carrying the error, logged.
        verdict, _failure = failed_frame(item.lane.inspector, item.frame, error, where=f"{item.lane.name}: ")
        self._deliver(item, verdict)

    def _deliver(self, item: _Work, verdict: FrameVerdict) -> None:
        lane = item.lane
        began = item.prepared.began if item.prepared is not None else time.perf_counter()
        verdict = lane.finish(item.frame, verdict)
        lane.observe_latency((time.perf_counter() - began) * 1000)
        lane.inspected += 1
        lane.last = Inspected(item.frame, verdict)
        if item.trigger is None or lane.triggers is None:
            lane.emit(verdict, item.frame)
        else:
            lane.triggers.record(item.trigger, verdict, item.frame)

    # -- jobs ----------------------------------------------------------------------------------

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


def _batch_key(inspector: Inspector, prepared: PreparedFrame) -> tuple[Any, ...]:
    """Frames whose tiles may share a model call: same backend, same prompt, same tile grid."""
    classifier = inspector.classifier
    return (
        id(inspector.backend),
        id(classifier.tokenizer),
        classifier.inspection.model_dump_json(),
        classifier.reasoning,
        classifier.batch_size,
        prepared.grid,
    )


class PublishWorker(threading.Thread):
    """Verdict queue -> every sink. A failing sink is logged and counted; the others still get it.

    ``observe`` (the live page) sees each verdict, with its frame, after the sinks have it.
    """

    def __init__(
        self,
        verdicts: BoundedQueue[Outgoing],
        sinks: Sequence[Sink],
        *,
        observe: Callable[[Frame | None, FrameVerdict], None] | None = None,
    ) -> None:
        super().__init__(name="publish", daemon=True)
        self._verdicts = verdicts
        self._sinks = list(sinks)
        self._observe = observe
        self._stop_event = threading.Event()
        self.published = 0
        self.failures = 0
        self.by_verdict: dict[str, int] = {"OK": 0, "NG": 0, "UNCERTAIN": 0}

    def stop(self) -> None:
        """Publish what is queued, then exit."""
        self._stop_event.set()

    def run(self) -> None:
        while True:
            item = self._verdicts.get(_POLL_S)
            if item is None:
                if self._stop_event.is_set():
                    return
                continue
            verdict = item.verdict
            for sink in self._sinks:
                try:
                    sink.publish(verdict)
                except Exception as error:  # noqa: BLE001 - one sink's trouble must not starve the others
                    self.failures += 1
                    log.error("%s could not take verdict %s: %s", type(sink).__name__, verdict.message_id, error)
            self.published += 1
            self.by_verdict[verdict.verdict] = self.by_verdict.get(verdict.verdict, 0) + 1
            if self._observe is not None:
                try:
                    self._observe(item.frame, verdict)
                except Exception:  # noqa: BLE001 - the page is a view, never a reason to stop publishing
                    log.exception("the live page could not take verdict %s", verdict.message_id)

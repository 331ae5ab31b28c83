"""The inference worker: it owns the model and turns the lanes' frames into verdicts.

It serves one ``Lane`` per station (one process may serve several cameras with one model)
and batches the tiles of all lanes' frames together. Anything that must not race with it
(a config reload, a trial inspection) runs on its thread between two rounds
(``call_between_frames``). A frame whose inspection raises gets an UNCERTAIN verdict
carrying the error; the loop goes on. In triggered mode a lane judges only frames taken
after a part's trigger (edge/triggers.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from edge.matching import FrameMatcher
from edge.queues import POLL_S, BoundedQueue
from edge.recipes import RecipeBook
from edge.triggers import PendingTrigger, TriggerBook
from inspector.classify import StageTimes
from inspector.frames import Frame
from inspector.payloads.verdict import FrameVerdict
from inspector.pipeline import Inspector, PreparedFrame
from inspector.runtime import failed_frame

log = logging.getLogger(__name__)

T = TypeVar("T")


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

    Without ``triggers`` every frame is judged (free-running). With them, ``matcher`` pairs frames
    with waiting parts (edge/matching.py: by capture time, by the part id a software-triggered
    image carries, or in order for a line-triggered camera); the others are passed over.
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
    # Product recipes (edge/recipes.py): a part is judged with its trigger's recipe, a free-running frame
    # with ``inspector``, the selected recipe's (select_recipe swaps it; a frame already picked up keeps its own).
    recipes: RecipeBook | None = None
    last: Inspected | None = None
    inspected: int = 0
    errors: int = 0
    consecutive_errors: int = 0  # frames in a row whose inspection failed (the supervisor degrades on it)
    lost: int = 0  # verdicts that could not be queued because the publisher was gone
    matcher: FrameMatcher = field(default_factory=lambda: FrameMatcher(hold_s=2.0))

    @property
    def passed_over(self) -> int:
        """Triggered mode: frames no part was waiting for."""
        return self.matcher.passed_over

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
        return self.matcher.next(self.frames, self.triggers)

    def inspector_for(self, trigger: PendingTrigger | None) -> Inspector:
        """The pipeline this frame is judged with: its part's recipe, else the selected one."""
        if trigger is not None and trigger.recipe is not None and self.recipes is not None:
            return self.recipes.inspector(trigger.recipe)
        return self.inspector


@dataclass
class _Work:
    lane: Lane
    frame: Frame
    trigger: PendingTrigger | None
    inspector: Inspector  # fixed when the frame is picked up: a recipe switch never lands mid-frame
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
                    self.doorbell.wait(POLL_S)
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
                frame, trigger = item
                work.append(_Work(lane, frame, trigger, lane.inspector_for(trigger)))
        return work

    def _round(self, work: list[_Work]) -> None:
        self.busy_since = time.monotonic()
        try:
            groups: dict[tuple[Any, ...], list[_Work]] = {}
            for item in work:
                try:
                    item.prepared = item.inspector.prepare(item.frame)
                except Exception as error:  # noqa: BLE001 - one bad frame must not stop the line
                    self._failed(item, error)
                    continue
                groups.setdefault(_batch_key(item.inspector, item.prepared), []).append(item)
            for items in groups.values():
                self._classify(items)
            self.rounds += 1
        finally:
            self.busy_since = None

    def _classify(self, items: list[_Work]) -> None:
        classifier = items[0].inspector.classifier
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
                verdict = item.inspector.conclude(ready, results[start : start + count], times)
            except Exception as error:  # noqa: BLE001
                self._failed(item, error)
            else:
                item.lane.consecutive_errors = 0
                self._deliver(item, verdict)
            start += count

    def _failed(self, item: _Work, error: BaseException) -> None:
        item.lane.errors += 1
        item.lane.consecutive_errors += 1
        # The station runtime's error policy, as in replay: UNCERTAIN carrying the error, logged.
        verdict, _failure = failed_frame(item.inspector, item.frame, error, where=f"{item.lane.name}: ")
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

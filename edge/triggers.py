"""Triggered inspection: one verdict per part, on the line controller's word.

With ``source.trigger: mqtt`` the line controller publishes a trigger message
(inspector/payloads/trigger.py) on ``.../trigger`` when a part is in front of the camera.
The capture keeps running; inference judges only frames *captured after* the trigger
arrived (the freshest one for a live camera), ``trigger_frames`` of them, and the worst
verdict wins (NG over UNCERTAIN over OK, then the higher confidence). That verdict, and the
reject when it is NG, carries the part id.

Every accepted part id gets exactly one verdict, never silence:

- not served within ``trigger_timeout_s`` (camera down, paused, inference behind):
  UNCERTAIN, with the reason in ``error``; a late inspection result is then discarded;
- ``trigger_backlog`` triggers already waiting: UNCERTAIN at once ("backlog full");
- out of order (a ``sequence`` not above the highest one accepted): UNCERTAIN at once — that
  part has passed the camera, and judging the current frame would judge another part;
- stale (``at`` older than ``trigger_timeout_s`` when it arrives): UNCERTAIN at once;
- naming a recipe the station does not have: UNCERTAIN at once, naming the ones it has.

A part keeps the recipe selected when it was accepted (or the one its trigger names) until its
verdict: a recipe switch happens between parts, never in the middle of one.

Which frame is a part's depends on the source (edge/matching.py): a frame taken at least
``trigger_delay_s`` after the trigger (by the stream's or camera's own timestamps), exactly the
image a software-triggered camera took for that part id, or, for a camera fired by its input
line, the frames and the triggers paired in order. ``on_accepted`` hears of every accepted part
(a software-triggered camera is fired there).

A part id triggered again within ``trigger_duplicate_window_s`` is a duplicate (an MQTT
QoS 1 re-delivery, a controller retry): it is ignored, logged and counted, so a part never
gets two verdicts. A payload that is not a valid trigger has no part id to answer for: it
is logged (without its content) and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from inspector.config import SourceConfig
from inspector.frames import Frame
from inspector.payloads.trigger import TriggerMessage, TriggerRejected, parse_trigger
from inspector.payloads.verdict import FrameVerdict

log = logging.getLogger(__name__)

Outcome = Literal["accepted", "duplicate", "malformed", "unserved"]
_RANK = {"OK": 0, "UNCERTAIN": 1, "NG": 2}


@dataclass(frozen=True)
class TriggerSettings:
    frames: int = 1
    timeout_s: float = 2.0
    duplicate_window_s: float = 60.0
    backlog: int = 8
    delay_s: float = 0.0

    @classmethod
    def from_source(cls, source: SourceConfig) -> TriggerSettings:
        return cls(
            frames=source.trigger_frames,
            timeout_s=source.trigger_timeout_s,
            duplicate_window_s=source.trigger_duplicate_window_s,
            backlog=source.trigger_backlog,
            delay_s=source.trigger_delay_s,
        )


@dataclass
class PendingTrigger:
    """A part waiting for its verdict."""

    part_id: str
    sequence: int | None
    received_at: datetime  # UTC, when the trigger arrived
    deadline: float  # monotonic
    frames: int
    recipe: str | None = None  # the product recipe this part is judged with, fixed when it was accepted
    verdicts: list[tuple[FrameVerdict, Frame | None]] = field(default_factory=list)
    resolved: bool = False
    not_before: datetime | None = None  # frames taken from this instant on are this part (default received_at)

    @property
    def earliest_frame(self) -> datetime:
        return self.not_before or self.received_at


def worst(verdicts: list[FrameVerdict]) -> FrameVerdict:
    """NG over UNCERTAIN over OK; among equals the more confident one."""
    return max(verdicts, key=_severity)


def _severity(verdict: FrameVerdict) -> tuple[int, float]:
    return _RANK[verdict.verdict], verdict.confidence


UnservedVerdict = Callable[[PendingTrigger, str], FrameVerdict]


class TriggerBook:
    """The station's pending triggers. ``submit`` from the MQTT thread, ``current``/``record`` from
    inference, ``expire`` from anyone (the inference loop and the supervisor both call it)."""

    def __init__(
        self,
        settings: TriggerSettings,
        *,
        unserved: UnservedVerdict,
        emit: Callable[[FrameVerdict, Frame | None], None],
        problem: Callable[[], str | None] = lambda: None,
        recipe_for: Callable[[str | None], str | None] = lambda requested: requested,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        # The trigger's recipe, or the selected one; raises ValueError (naming the known ones) for an unknown id.
        self._recipe_for = recipe_for
        self._unserved = unserved
        self._emit = emit
        self._problem = problem
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: deque[PendingTrigger] = deque()
        self._seen: OrderedDict[str, float] = OrderedDict()  # part id -> monotonic time first seen
        self._highest_sequence: int | None = None
        self.doorbell: threading.Event | None = None  # set when a part starts waiting (wakes inference)
        self.on_accepted: Callable[[PendingTrigger], None] | None = None  # e.g. fire a software-triggered camera
        self.counts: dict[str, int] = {
            "accepted": 0, "served": 0, "timed_out": 0, "backlog_full": 0, "out_of_order": 0,
            "stale": 0, "duplicate": 0, "malformed": 0, "late_results_discarded": 0, "unknown_recipe": 0,
            "lost_frames": 0,
        }  # fmt: skip

    # -- the line controller's side ------------------------------------------------------------

    def submit(self, payload: bytes | str, *, received_at: datetime | None = None) -> Outcome:
        """Take one trigger payload; every accepted part id will get one verdict."""
        try:
            message = parse_trigger(payload)
        except TriggerRejected as error:
            self.counts["malformed"] += 1
            log.warning("trigger ignored: %s", error)
            return "malformed"
        return self.add(message, received_at=received_at)

    def add(self, message: TriggerMessage, *, received_at: datetime | None = None) -> Outcome:
        now = self._clock()
        arrived = received_at or datetime.now(UTC)
        with self._lock:
            self._forget_old(now)
            if message.part_id in self._seen:
                self.counts["duplicate"] += 1
                log.info("trigger for part %s ignored: a duplicate within %g s", message.part_id,
                         self.settings.duplicate_window_s)  # fmt: skip
                return "duplicate"
            if self.settings.duplicate_window_s > 0:
                self._seen[message.part_id] = now
            pending = PendingTrigger(
                part_id=message.part_id,
                sequence=message.sequence,
                received_at=arrived,
                deadline=now + self.settings.timeout_s,
                frames=message.frames or self.settings.frames,
                not_before=arrived + timedelta(seconds=self.settings.delay_s),
            )
            refusal = self._refusal(message, pending, arrived)
            if refusal is None:
                if message.sequence is not None:
                    self._highest_sequence = message.sequence
                self._pending.append(pending)
                self.counts["accepted"] += 1
                if self.doorbell is not None:
                    self.doorbell.set()
            if refusal is not None:
                pending.resolved = True
        if refusal is not None:
            self._answer_unserved(pending, refusal)
            return "unserved"
        if self.on_accepted is not None:
            try:
                self.on_accepted(pending)
            except Exception:  # noqa: BLE001 - the part still gets its verdict (by time-out, with the reason)
                log.exception("part %s: acting on the accepted trigger failed", pending.part_id)
        return "accepted"

    def _refusal(self, message: TriggerMessage, pending: PendingTrigger, arrived: datetime) -> str | None:
        """Why this part is answered UNCERTAIN at once (counted), or None; sets its recipe. Under the lock."""
        try:
            pending.recipe = self._recipe_for(message.recipe)
        except ValueError as error:
            self.counts["unknown_recipe"] += 1
            return str(error)
        highest = self._highest_sequence
        if message.sequence is not None and highest is not None and message.sequence <= highest:
            self.counts["out_of_order"] += 1
            return f"out-of-order trigger (sequence {message.sequence} after {highest}): the part has passed the camera"
        if message.at is not None and (arrived - message.at).total_seconds() > self.settings.timeout_s:
            self.counts["stale"] += 1
            late = (arrived - message.at).total_seconds()
            return f"stale trigger: delivered {late:.1f} s after it was sent (limit {self.settings.timeout_s:g} s)"
        if len(self._pending) >= self.settings.backlog:
            self.counts["backlog_full"] += 1
            return f"trigger backlog full ({len(self._pending)} parts waiting for a frame)"
        return None

    # -- the inference side --------------------------------------------------------------------

    def current(self) -> PendingTrigger | None:
        """The oldest part still waiting, or None."""
        self.expire()
        with self._lock:
            return self._pending[0] if self._pending else None

    def waiting_for(self, part_id: str) -> PendingTrigger | None:
        """The waiting trigger of ``part_id`` (a software-triggered image names its part), or None."""
        with self._lock:
            return next((t for t in self._pending if t.part_id == part_id), None)

    def give_up(self, trigger: PendingTrigger, reason: str) -> bool:
        """Answer a waiting part with UNCERTAIN now (its frame is known to be lost); False if already answered."""
        with self._lock:
            if trigger.resolved:
                return False
            trigger.resolved = True
            self._remove(trigger)
            self.counts["lost_frames"] += 1
        self._answer_unserved(trigger, reason)
        return True

    def waiting(self) -> int:
        with self._lock:
            return len(self._pending)

    def record(self, trigger: PendingTrigger, verdict: FrameVerdict, frame: Frame | None = None) -> bool:
        """One frame's verdict for ``trigger``; True once the part is decided (and its verdict emitted)."""
        with self._lock:
            if trigger.resolved:  # timed out meanwhile: it already has its UNCERTAIN verdict
                self.counts["late_results_discarded"] += 1
                return True
            trigger.verdicts.append((verdict, frame))
            if len(trigger.verdicts) < trigger.frames:
                return False
            trigger.resolved = True
            self._remove(trigger)
            self.counts["served"] += 1
            final, final_frame = max(trigger.verdicts, key=lambda pair: _severity(pair[0]))
        self._emit(final, final_frame)
        return True

    def expire(self) -> int:
        """Answer every part whose deadline has passed with UNCERTAIN; returns how many."""
        now = self._clock()
        expired: list[PendingTrigger] = []
        with self._lock:
            while self._pending and self._pending[0].deadline <= now:
                trigger = self._pending.popleft()
                trigger.resolved = True
                expired.append(trigger)
            self.counts["timed_out"] += len(expired)
        for trigger in expired:
            problem = self._problem()
            judged = f" ({len(trigger.verdicts)} of {trigger.frames} frames judged)" if trigger.verdicts else ""
            reason = f"trigger not served within {self.settings.timeout_s:g} s{judged}"
            self._answer_unserved(trigger, reason + (f": {problem}" if problem else ""))
        return len(expired)

    def expire_all(self, reason: str) -> int:
        """Answer every waiting part with UNCERTAIN now (shutdown); returns how many."""
        with self._lock:
            left = list(self._pending)
            self._pending.clear()
            for trigger in left:
                trigger.resolved = True
        for trigger in left:
            self._answer_unserved(trigger, reason)
        return len(left)

    # -- internals -----------------------------------------------------------------------------

    def _answer_unserved(self, trigger: PendingTrigger, reason: str) -> None:
        log.warning("part %s: UNCERTAIN, %s", trigger.part_id, reason)
        self._emit(self._unserved(trigger, reason), None)

    def _remove(self, trigger: PendingTrigger) -> None:
        try:
            self._pending.remove(trigger)
        except ValueError:
            pass

    def _forget_old(self, now: float) -> None:
        horizon = now - self.settings.duplicate_window_s
        while self._seen and next(iter(self._seen.values())) < horizon:
            self._seen.popitem(last=False)

"""Which frame is which part's: the three ways a triggered station pairs frames with waiting parts.

- **By time** (a free-running camera, RTSP, video): the oldest waiting part takes the first frame
  taken at or after its ``earliest_frame`` (the trigger's arrival plus ``trigger_delay_s``), by
  the frame's own ``captured_at`` (stream or camera timestamps, inspector/sources/clock.py);
  earlier frames are passed over.
- **By part id** (a software-triggered camera): the image was fired for one part and carries its
  id; it goes to that part if it is still waiting, else (the part timed out) it is passed over.
- **By order** (a camera fired by its input line): frames carry ``trigger_sequence``, the line
  pulses counted by the camera's block ids. The n-th frame is the n-th part's; frames may come
  before or after their trigger message, so they are held for up to ``hold_s``. A gap in the
  sequence is a frame the transport lost: the part it belonged to is answered UNCERTAIN at once
  rather than judged on its neighbour's image. A sequence that goes back is a new source (a
  reloaded config): counting starts again from it.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable

from edge.queues import BoundedQueue
from edge.triggers import PendingTrigger, TriggerBook
from inspector.frames import Frame

Match = tuple[Frame, PendingTrigger]


class FrameMatcher:
    """Pairs a lane's frames with its trigger book's waiting parts (the lane's inference thread only)."""

    def __init__(self, hold_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold_s = hold_s
        self._clock = clock
        # In-order frames waiting for their trigger; None marks a line pulse whose frame was lost.
        self._held: deque[tuple[float, Frame | None]] = deque()
        self._next_sequence = 0  # camera sources number a session's line pulses from 0
        self.passed_over = 0
        self.lost = 0

    def next(self, frames: BoundedQueue[Frame], triggers: TriggerBook) -> Match | None:
        """The next (frame, part) to judge, or None; frames nobody will take are counted as passed over."""
        while (frame := frames.get(0)) is not None:
            if "trigger_sequence" in frame.meta:
                self._hold(frame)
                continue
            match = self._by_part_id(frame, triggers) if frame.part_id is not None else self._by_time(frame, triggers)
            if match is not None:
                return match
        return self._by_order(triggers)

    # -- the three rules -----------------------------------------------------------------------

    def _by_time(self, frame: Frame, triggers: TriggerBook) -> Match | None:
        trigger = triggers.current()
        if trigger is not None and frame.captured_at >= trigger.earliest_frame:
            return dataclasses.replace(frame, part_id=trigger.part_id), trigger
        self.passed_over += 1  # taken before the oldest part arrived (or nobody waits): not a part's
        return None

    def _by_part_id(self, frame: Frame, triggers: TriggerBook) -> Match | None:
        trigger = triggers.waiting_for(frame.part_id or "")
        if trigger is None:
            self.passed_over += 1  # its part was answered already (timed out while the camera was slow)
            return None
        return frame, trigger

    def _hold(self, frame: Frame) -> None:
        sequence = int(frame.meta["trigger_sequence"])  # type: ignore[call-overload]
        now = self._clock()
        if sequence > self._next_sequence:
            # Line pulses whose frames never came: their parts are answered, not judged on a neighbour's image.
            self._held.extend((now, None) for _ in range(sequence - self._next_sequence))
        self._next_sequence = sequence + 1
        self._held.append((now, frame))

    def _by_order(self, triggers: TriggerBook) -> Match | None:
        now = self._clock()
        while self._held and now - self._held[0][0] > self.hold_s:
            self._held.popleft()  # no trigger came for it in time: a pulse that was not a part
            self.passed_over += 1
        while self._held:
            trigger = triggers.current()
            if trigger is None:
                return None
            _, frame = self._held.popleft()
            if frame is not None:
                return dataclasses.replace(frame, part_id=trigger.part_id), trigger
            self.lost += 1
            triggers.give_up(trigger, "its frame was lost on the way from the camera (a gap in the block ids)")
        return None

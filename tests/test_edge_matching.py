"""Which frame is which part's (edge/matching.py): by capture time and trigger_delay_s, by the part id a
software-triggered image carries, and in order for a line-triggered camera, gaps included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_edge_triggers import Clock, verdict  # the trigger book's own test helpers

from edge.matching import FrameMatcher
from edge.queues import BoundedQueue
from edge.triggers import PendingTrigger, TriggerBook, TriggerSettings
from inspector.frames import Frame
from inspector.payloads.trigger import TriggerMessage
from inspector.payloads.verdict import FrameVerdict

T0 = datetime(2026, 1, 1, tzinfo=UTC)
IMAGE = np.zeros((4, 4, 3), np.uint8)


def frame(index: int, taken_s: float, part_id: str | None = None, **meta: object) -> Frame:
    return Frame(IMAGE, "cam", index, T0 + timedelta(seconds=taken_s), part_id=part_id, meta=dict(meta))


def station(clock: Clock, **changes: float) -> tuple[TriggerBook, FrameMatcher, BoundedQueue[Frame], list]:
    emitted: list[FrameVerdict] = []

    def unserved(trigger: PendingTrigger, reason: str) -> FrameVerdict:
        return verdict("UNCERTAIN", 0.0, trigger.part_id, error=reason)

    book = TriggerBook(
        TriggerSettings(timeout_s=2.0, backlog=64, **changes), unserved=unserved,
        emit=lambda v, _f: emitted.append(v), clock=clock,
    )  # fmt: skip
    return book, FrameMatcher(hold_s=2.0, clock=clock), BoundedQueue(64), emitted


def trigger(book: TriggerBook, part: str, at_s: float) -> None:
    assert book.add(TriggerMessage(part_id=part), received_at=T0 + timedelta(seconds=at_s)) == "accepted"


def judge_all(book: TriggerBook, matcher: FrameMatcher, frames: BoundedQueue[Frame]) -> list[tuple[str, int]]:
    """Judge every match (OK), as the inference worker would; (part, frame index) in order."""
    judged = []
    while (match := matcher.next(frames, book)) is not None:
        image, pending = match
        judged.append((pending.part_id, image.index))
        book.record(pending, verdict("OK", 0.9, pending.part_id), image)
    return judged


def test_trigger_delay_skips_frames_taken_before_the_part_is_in_view() -> None:
    clock = Clock()
    book, matcher, frames, _ = station(clock, delay_s=0.25)
    trigger(book, "P-1", at_s=1.0)  # the photo-eye is upstream: the part is in view from 1.25 s
    for index, taken in enumerate([0.9, 1.05, 1.2, 1.3, 1.4]):
        frames.put_latest(frame(index, taken))
    assert judge_all(book, matcher, frames) == [("P-1", 3)]  # taken at 1.3 s, the first at or after 1.25 s
    assert matcher.passed_over == 4  # three too early, one after the part was served


def test_without_delay_the_first_frame_after_the_trigger_is_the_parts() -> None:
    clock = Clock()
    book, matcher, frames, _ = station(clock)
    trigger(book, "P-1", at_s=1.0)
    frames.put_latest(frame(0, 0.99))
    frames.put_latest(frame(1, 1.01))
    assert judge_all(book, matcher, frames) == [("P-1", 1)]


def test_a_software_triggered_image_goes_to_the_part_it_was_fired_for() -> None:
    clock = Clock()
    book, matcher, frames, emitted = station(clock)
    for index, part in enumerate(["P-1", "P-2", "P-3"]):
        trigger(book, part, at_s=index)
    # P-1's image never came (failed grab); P-3's came before P-2's.
    frames.put_latest(frame(0, 5.0, part_id="P-3"))
    frames.put_latest(frame(1, 5.1, part_id="P-2"))
    assert judge_all(book, matcher, frames) == [("P-3", 0), ("P-2", 1)]
    clock.now += 3
    book.expire()
    assert [(v.source.part_id, v.verdict) for v in emitted] == [("P-3", "OK"), ("P-2", "OK"), ("P-1", "UNCERTAIN")]
    frames.put_latest(frame(2, 9.0, part_id="P-1"))  # it came after all, too late: nobody's
    assert judge_all(book, matcher, frames) == [] and matcher.passed_over == 1


def test_line_triggered_frames_pair_in_order_whichever_arrives_first() -> None:
    clock = Clock()
    book, matcher, frames, _ = station(clock)
    frames.put_latest(frame(0, 0.0, trigger_sequence=0))  # the camera was faster than the PLC's message
    assert judge_all(book, matcher, frames) == []
    trigger(book, "P-1", at_s=0.1)
    trigger(book, "P-2", at_s=0.2)  # and now the PLC is faster
    assert judge_all(book, matcher, frames) == [("P-1", 0)]
    frames.put_latest(frame(1, 0.3, trigger_sequence=1))
    assert judge_all(book, matcher, frames) == [("P-2", 1)]


def test_a_lost_line_triggered_frame_answers_its_part_not_the_neighbours() -> None:
    clock = Clock()
    book, matcher, frames, emitted = station(clock)
    for index in range(4):
        trigger(book, f"P-{index}", at_s=index * 0.1)
    frames.put_latest(frame(0, 0.0, trigger_sequence=0))
    frames.put_latest(frame(1, 0.2, trigger_sequence=2))  # pulse 1 never arrived
    frames.put_latest(frame(2, 0.3, trigger_sequence=3))
    assert judge_all(book, matcher, frames) == [("P-0", 0), ("P-2", 1), ("P-3", 2)]
    lost = [v for v in emitted if v.verdict == "UNCERTAIN"]
    assert [v.source.part_id for v in lost] == ["P-1"] and "lost" in (lost[0].error or "")
    assert book.counts["lost_frames"] == 1


def test_a_line_pulse_no_trigger_claims_is_dropped_after_the_hold_time() -> None:
    clock = Clock()
    book, matcher, frames, _ = station(clock)
    frames.put_latest(frame(0, 0.0, trigger_sequence=0))
    assert judge_all(book, matcher, frames) == []
    clock.now += 2.5
    trigger(book, "P-1", at_s=2.5)
    assert judge_all(book, matcher, frames) == [] and matcher.passed_over == 1
    frames.put_latest(frame(1, 2.6, trigger_sequence=1))
    assert judge_all(book, matcher, frames) == [("P-1", 1)]


@settings(max_examples=50, deadline=None)
@given(
    lost=st.sets(st.integers(0, 19)),
    frames_first=st.lists(st.booleans(), min_size=20, max_size=20),
)
def test_every_line_triggered_part_gets_its_own_frame_or_an_uncertain(lost: set[int], frames_first: list[bool]) -> None:
    clock = Clock()
    book, matcher, frames, emitted = station(clock)
    judged: list[tuple[str, int]] = []
    for index in range(20):
        steps = [lambda i=index: i not in lost and frames.put_latest(frame(i, i, trigger_sequence=i)),
                 lambda i=index: trigger(book, f"P-{i}", at_s=i)]  # fmt: skip
        for step in steps if frames_first[index] else reversed(steps):
            step()
        judged += judge_all(book, matcher, frames)
    # A lost frame is only known once a later one arrives: the tail of lost frames times out.
    clock.now += 3
    book.expire()
    assert judged == [(f"P-{i}", i) for i in range(20) if i not in lost]  # each part its own frame
    answered = sorted(int(v.source.part_id.split("-")[1]) for v in emitted)
    assert answered == list(range(20))  # exactly one verdict per part
    assert {int(v.source.part_id.split("-")[1]) for v in emitted if v.verdict == "UNCERTAIN"} == lost

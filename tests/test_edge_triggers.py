"""Triggered inspection's bookkeeping (edge/triggers.py) and the trigger payload: one verdict per part."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.triggers import PendingTrigger, TriggerBook, TriggerSettings, worst
from inspector.payloads.trigger import TriggerRejected, parse_trigger, trigger_json_schema
from inspector.payloads.verdict import FrameVerdict, ModelRef, SourceRef, StationRef

COMMITTED = Path(__file__).resolve().parents[1] / "inspector" / "schemas" / "trigger.schema.json"
STATION = StationRef(site="s", area="a", line="l", station="st", camera="c")
MODEL = ModelRef(id="tiny", backend="torch", precision="float32", random_weights=True)


def verdict(result: str = "OK", confidence: float = 0.9, part_id: str | None = None, error: str | None = None):
    return FrameVerdict(
        station=STATION,
        source=SourceRef(id="cam", frame_index=1, captured_at=datetime.now(UTC), part_id=part_id),
        verdict=result, confidence=confidence, model=MODEL, error=error,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def book(clock: Clock | None = None, problem: str | None = None, **changes) -> tuple[TriggerBook, list[FrameVerdict]]:
    emitted: list[FrameVerdict] = []

    def unserved(trigger: PendingTrigger, reason: str) -> FrameVerdict:
        return verdict("UNCERTAIN", 0.0, trigger.part_id, error=reason)

    settings_ = TriggerSettings(**{"frames": 1, "timeout_s": 2.0, "duplicate_window_s": 60.0, "backlog": 4, **changes})
    return (
        TriggerBook(
            settings_,
            unserved=unserved,
            emit=lambda v, _frame: emitted.append(v),
            problem=lambda: problem,
            clock=clock or Clock(),
        ),
        emitted,
    )


def test_committed_schema_is_in_sync() -> None:
    assert json.loads(COMMITTED.read_text()) == trigger_json_schema()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"part_id": 123}', "part_id"),
        (b'{"part_id": "../../etc/passwd"}', "part_id"),
        (b'{"part": "P1"}', "part"),
        (b'{"part_id": "P1", "frames": 0}', "frames"),
        (b'{"part_id": "P1", "at": "yesterday"}', "at"),
    ],
)
def test_a_bad_trigger_names_the_field_and_never_echoes_the_value(payload: bytes, field: str) -> None:
    with pytest.raises(TriggerRejected) as caught:
        parse_trigger(payload)
    assert field in str(caught.value)
    assert "etc/passwd" not in str(caught.value) and "yesterday" not in str(caught.value)


def test_not_json_and_oversized_payloads_are_refused() -> None:
    for payload in (b"P1", b"\xff\xfe", b"[1]", b'{"part_id": "' + b"x" * 5000 + b'"}'):
        with pytest.raises(TriggerRejected):
            parse_trigger(payload)


def test_a_part_is_served_by_its_frames_and_the_worst_verdict_wins() -> None:
    triggers, emitted = book(frames=3)
    assert triggers.submit(b'{"part_id": "P1"}') == "accepted"
    pending = triggers.current()
    assert pending is not None and pending.part_id == "P1" and pending.frames == 3
    ok, ng, unsure = verdict("OK", 0.99, "P1"), verdict("NG", 0.6, "P1"), verdict("UNCERTAIN", 0.9, "P1")
    assert not triggers.record(pending, ok) and not triggers.record(pending, ng)
    assert triggers.record(pending, unsure)
    assert emitted == [ng] and triggers.current() is None and triggers.counts["served"] == 1


def test_worst_prefers_ng_then_uncertain_then_confidence() -> None:
    assert worst([verdict("OK", 1.0), verdict("UNCERTAIN", 0.1)]).verdict == "UNCERTAIN"
    assert worst([verdict("NG", 0.6), verdict("NG", 0.8)]).confidence == 0.8


def test_a_trigger_nobody_serves_gets_uncertain_with_the_reason_after_the_timeout() -> None:
    clock = Clock()
    triggers, emitted = book(clock, problem="source unavailable: connection refused")
    triggers.submit(b'{"part_id": "P7"}')
    clock.now += 1.9
    assert triggers.expire() == 0 and emitted == []
    clock.now += 0.2
    assert triggers.expire() == 1
    (answer,) = emitted
    assert answer.verdict == "UNCERTAIN" and answer.source.part_id == "P7"
    assert "not served within 2 s" in answer.error and "connection refused" in answer.error


def test_a_late_inspection_after_the_timeout_is_discarded_not_published_twice() -> None:
    clock = Clock()
    triggers, emitted = book(clock)
    triggers.submit(b'{"part_id": "P1"}')
    pending = triggers.current()
    clock.now += 5
    triggers.expire()
    assert triggers.record(pending, verdict("NG", 0.9, "P1"))
    assert [v.verdict for v in emitted] == ["UNCERTAIN"] and triggers.counts["late_results_discarded"] == 1


def test_duplicates_within_the_window_are_ignored_and_allowed_after_it() -> None:
    clock = Clock()
    triggers, emitted = book(clock, duplicate_window_s=10)
    assert triggers.submit(b'{"part_id": "P1"}') == "accepted"
    assert triggers.submit(b'{"part_id": "P1"}') == "duplicate"
    triggers.record(triggers.current(), verdict("OK", 0.9, "P1"))
    clock.now += 11
    assert triggers.submit(b'{"part_id": "P1"}') == "accepted"
    assert len(emitted) == 1 and triggers.counts["duplicate"] == 1


def test_out_of_order_stale_and_backlog_get_uncertain_at_once() -> None:
    triggers, emitted = book(backlog=2)
    assert triggers.submit(b'{"part_id": "P5", "sequence": 5}') == "accepted"
    assert triggers.submit(b'{"part_id": "P4", "sequence": 4}') == "unserved"
    old = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    assert triggers.submit(json.dumps({"part_id": "P6", "at": old})) == "unserved"
    assert triggers.submit(b'{"part_id": "P7", "sequence": 7}') == "accepted"
    assert triggers.submit(b'{"part_id": "P8", "sequence": 8}') == "unserved"
    reasons = {v.source.part_id: v.error for v in emitted}
    assert "out-of-order" in reasons["P4"] and "stale" in reasons["P6"] and "backlog full" in reasons["P8"]
    assert all(v.verdict == "UNCERTAIN" for v in emitted) and triggers.waiting() == 2


def test_a_malformed_trigger_is_counted_and_answers_nothing() -> None:
    triggers, emitted = book()
    assert triggers.submit(b"not json") == "malformed"
    assert emitted == [] and triggers.counts["malformed"] == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["submit", "serve", "tick"]), st.integers(0, 6), st.integers(0, 12)), max_size=40
    )
)
def test_every_part_that_is_not_a_duplicate_gets_exactly_one_verdict(steps: list[tuple[str, int, int]]) -> None:
    clock = Clock()
    triggers, emitted = book(clock, frames=2, backlog=3, duplicate_window_s=1000)
    answered: list[str] = []
    for action, part, sequence in steps:
        if action == "submit":
            outcome = triggers.submit(json.dumps({"part_id": f"P{part}", "sequence": sequence}))
            if outcome in ("accepted", "unserved"):
                answered.append(f"P{part}")
        elif action == "serve" and (pending := triggers.current()) is not None:
            triggers.record(pending, verdict("OK", 0.5, pending.part_id))
        else:
            clock.now += 0.7
            triggers.expire()
    clock.now += 100
    triggers.expire()
    assert sorted(v.source.part_id for v in emitted) == sorted(answered)
    assert len(set(answered)) == len(answered)

"""Stream timestamps -> capture times: a buffered burst is dated back to when its frames were taken."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.sources.clock import StreamClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_burst_after_a_stall_keeps_the_frames_true_spacing() -> None:
    clock = StreamClock()
    # 10 fps; frames 0-4 arrive 20 ms after they were taken; then the network stalls for 0.6 s
    # and frames 5-9 arrive together at 1.1 s.
    stamps = [clock.stamp(i * 0.1, at(i * 0.1 + 0.02)) for i in range(5)]
    stamps += [clock.stamp(i * 0.1, at(1.1)) for i in range(5, 10)]
    assert [round((s - T0).total_seconds(), 3) for s in stamps] == [round(i * 0.1 + 0.02, 3) for i in range(10)]


@settings(max_examples=60, deadline=None)
@given(
    delays=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=80),
    period=st.floats(0.005, 0.2),
)
def test_capture_times_never_after_arrival_and_spaced_as_the_stream(delays: list[float], period: float) -> None:
    clock = StreamClock()
    taken = [i * period for i in range(len(delays))]
    # Arrivals never go back in time (one decoder, in order).
    arrivals, latest = [], 0.0
    for moment, delay in zip(taken, delays):
        latest = max(latest, moment + delay)
        arrivals.append(latest)
    stamps = [clock.stamp(pts, at(arrived)) for pts, arrived in zip(taken, arrivals)]
    assert all(stamp <= at(arrived) for stamp, arrived in zip(stamps, arrivals))
    # Each estimate is late by at most the least delay seen so far: never earlier than the truth.
    least = float("inf")
    for stamp, moment, arrived in zip(stamps, taken, arrivals):
        least = min(least, arrived - moment)
        error = (stamp - at(moment)).total_seconds()
        assert -1e-5 <= error <= least + 1e-5


def test_a_stream_that_restarts_starts_the_clock_again() -> None:
    clock = StreamClock()
    clock.stamp(5.0, at(10.0))
    assert clock.stamp(0.0, at(20.0)) == at(20.0)  # PTS went back (a loop, a reconnect): no old origin
    assert clock.stamp(None, at(21.0)) == at(21.0)

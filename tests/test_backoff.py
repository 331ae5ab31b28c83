"""The one reconnect back-off (inspector/backoff.py): doubling, capped, jittered within bounds, reset."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.backoff import Backoff
from inspector.config import ReconnectConfig

policies = st.tuples(st.floats(0.001, 10), st.floats(0.001, 100), st.floats(0, 1))


@settings(max_examples=100)
@given(policy=policies, n=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_every_delay_lies_within_its_jitter_band_under_the_cap(policy, n: int, seed: int) -> None:
    initial, max_s, jitter = policy
    backoff = Backoff(initial, max_s, jitter=jitter, rng=random.Random(seed))
    nominal = min(initial, max_s)
    for _ in range(n):
        delay = backoff.next_delay()
        assert (1 - jitter) * nominal - 1e-12 <= delay <= nominal <= max_s
        nominal = min(2 * nominal, max_s)


@settings(max_examples=50)
@given(policy=policies, before=st.integers(1, 30), seed=st.integers(0, 2**32))
def test_reset_starts_again_from_the_first_delay(policy, before: int, seed: int) -> None:
    initial, max_s, jitter = policy
    backoff = Backoff(initial, max_s, jitter=jitter, rng=random.Random(seed))
    for _ in range(before):
        backoff.next_delay()
    backoff.reset()
    assert backoff.nominal_s == min(initial, max_s)
    assert backoff.next_delay() <= min(initial, max_s)


def test_without_jitter_the_delays_double_exactly() -> None:
    backoff = Backoff(0.5, 3.0, jitter=0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_spreads_clients_that_failed_together() -> None:
    """Ten clients that lost the broker at the same instant do not all come back at the same instant."""
    firsts = {Backoff(1.0, 30.0, jitter=0.5, rng=random.Random(seed)).next_delay() for seed in range(10)}
    assert len(firsts) == 10 and min(firsts) >= 0.5 and max(firsts) <= 1.0


def test_from_policy_reads_the_reconnect_config() -> None:
    backoff = Backoff.from_policy(ReconnectConfig(initial_s=2, max_s=4, jitter=0))
    assert [backoff.next_delay() for _ in range(3)] == [2, 4, 4]


@pytest.mark.parametrize("bad", [{"initial_s": 0, "max_s": 1}, {"initial_s": 1, "max_s": 1, "jitter": 1.5}])
def test_a_nonsense_policy_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        Backoff(**bad)

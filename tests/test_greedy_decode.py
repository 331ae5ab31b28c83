"""The shared decode loop: forced ids first, per-row stops, the token bound."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from inspector.backends.base import greedy_decode

STOP = 99


def scripted(scripts: list[list[int]], forced: int):
    """A fake model: after the ``forced`` prefix, row r answers scripts[r] in order, then STOP forever."""
    fed: list[list[int]] = []

    def answer(k: int) -> np.ndarray:
        return np.array([script[k] if 0 <= k < len(script) else STOP for script in scripts])

    def feed(tokens: np.ndarray) -> np.ndarray:
        fed.append(tokens.tolist())
        return answer(len(fed) - forced)

    return feed, lambda: answer(0), fed


@given(
    scripts=st.lists(st.lists(st.integers(0, 50), max_size=8), min_size=1, max_size=4),
    limit=st.integers(0, 10),
    forced=st.lists(st.integers(0, 50), max_size=3),
)
def test_rows_stop_at_stop_id_or_limit(scripts, limit, forced) -> None:
    feed, first, fed = scripted(scripts, len(forced))
    out = greedy_decode(feed, first, len(scripts), forced, limit, [STOP])
    assert out == [script[:limit] for script in scripts]
    assert fed[: len(forced)] == [[token] * len(scripts) for token in forced]


def test_forced_ids_skip_the_first_choice() -> None:
    calls = []
    out = greedy_decode(lambda t: np.array([7]), lambda: calls.append(1) or np.array([1]), 1, [5], 2, [STOP])
    assert out == [[7, 7]] and calls == []

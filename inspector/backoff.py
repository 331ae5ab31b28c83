"""Reconnect back-off, one policy for every reconnecting thing (MQTT links, live sources, the edge's capture).

Exponential: the nominal delay starts at ``initial_s`` and doubles up to ``max_s``. With
jitter, each wait is drawn uniformly from ``[(1 - jitter) * nominal, nominal]``: after a
broker or camera restart, the clients of a whole line do not come back in lock-step (a
thundering herd), and no wait is ever longer than the nominal one. ``reset()`` after a
success: the next failure starts again from ``initial_s`` instead of the cap.
"""

from __future__ import annotations

import random
from typing import Protocol


class ReconnectPolicy(Protocol):
    """What ``Backoff.from_policy`` reads (``inspector.config.ReconnectConfig`` has it)."""

    initial_s: float
    max_s: float
    jitter: float


class Backoff:
    """Delays between attempts: exponential, capped, jittered, reset after a success. Not thread-safe (one owner)."""

    def __init__(self, initial_s: float, max_s: float, *, jitter: float = 0.5, rng: random.Random | None = None):
        if initial_s <= 0 or max_s <= 0:
            raise ValueError(f"back-off delays must be positive (initial_s={initial_s}, max_s={max_s})")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter is a fraction of the delay, 0..1 (got {jitter})")
        self.initial_s = min(initial_s, max_s)
        self.max_s = max_s
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._nominal = self.initial_s

    @classmethod
    def from_policy(cls, policy: ReconnectPolicy, *, rng: random.Random | None = None) -> Backoff:
        return cls(policy.initial_s, policy.max_s, jitter=policy.jitter, rng=rng)

    @property
    def nominal_s(self) -> float:
        """The un-jittered delay the next ``next_delay()`` draws from."""
        return self._nominal

    def next_delay(self) -> float:
        """The wait before the next attempt; each call doubles the nominal delay, up to ``max_s``."""
        nominal = self._nominal
        self._nominal = min(nominal * 2.0, self.max_s)
        if self.jitter == 0.0:
            return nominal
        return nominal * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        """After a success (a connection that held, a good frame): start again from ``initial_s``."""
        self._nominal = self.initial_s

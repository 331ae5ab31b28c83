"""The bounded queues between the edge workers (capture -> inference -> publish).

Live sources keep only the freshest frames (``put_latest`` evicts the oldest, counted in
``dropped``): inspection looks at what the line shows *now*. File sources and verdicts wait
for room instead (``put_wait``): nothing is skipped.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
# How often blocked workers look up to notice a stop request.
POLL_S = 0.1


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
                self._cond.wait(POLL_S)
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

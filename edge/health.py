"""What the service says about itself: its state (online / degraded / offline) and the heartbeat.

The state is derived, never stored: from whether the workers are alive, whether the
source delivers, and whether an operator paused inspection. The heartbeat is a small,
versioned JSON document (``HealthMessage``, inspector/payloads/health.py) published on
``.../health`` every N seconds and served by ``/healthz``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

# The heartbeat payload itself lives with every other wire message, in inspector/payloads/.
from inspector.payloads.health import (  # noqa: F401 - re-exported for edge modules
    HEALTH_SCHEMA_ID,
    HEALTH_SCHEMA_VERSION,
    FrameCounts,
    HealthMessage,
    Latency,
    SourceHealth,
)
from inspector.payloads.status import StationState as State

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Condition:
    """The facts the state is derived from, sampled by the supervisor."""

    workers_alive: bool
    source_healthy: bool
    paused: bool
    stopping: bool = False
    source_problem: str | None = None
    stalled_s: float | None = None  # set when one frame has been in inference for too long
    failing: str | None = None  # set when too many verdicts in a row failed (inspection or sinks)


def derive_state(condition: Condition) -> tuple[State, str | None]:
    """The station state and why; ``online`` needs live workers, a delivering source and no pause."""
    if condition.stopping:
        return "offline", "shutting down"
    if not condition.workers_alive:
        return "degraded", "a worker stopped"
    if condition.stalled_s is not None:
        # A fixed text: a reason that ticked with the seconds would re-publish the retained status each tick.
        return "degraded", "inference stalled: one frame is taking far longer than it should"
    if condition.failing is not None:
        return "degraded", condition.failing
    if not condition.source_healthy:
        return "degraded", condition.source_problem or "source unavailable; reconnecting"
    if condition.paused:
        # Not inspecting is not "online": a line controller must not trust silence as OK.
        return "degraded", "paused by command"
    return "online", None


class LatencyWindow:
    """The last ``size`` frame latencies, for p50/p95 without unbounded memory."""

    def __init__(self, size: int = 1024) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._values.append(ms)

    def percentiles(self, *qs: float) -> list[float | None]:
        """Nearest-rank percentiles (0 < q <= 100); None while no frame has been timed."""
        with self._lock:
            values = sorted(self._values)
        if not values:
            return [None for _ in qs]
        return [round(values[min(len(values) - 1, max(0, int(-(-q * len(values) // 100)) - 1))], 3) for q in qs]


class RateMeter:
    """Frames per second between two readings of a monotonically increasing count."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None

    def rate(self, count: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        last, self._last = self._last, (now, count)
        if last is None or now <= last[0]:
            return 0.0
        return round((count - last[1]) / (now - last[0]), 3)


def rss_bytes() -> int | None:
    """Current resident set size (Linux /proc); None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def gpu_memory(device: str) -> dict[str, int] | None:
    """Allocated / reserved / free / total bytes of the model's CUDA device; None on CPU."""
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        index = torch.device(device).index or 0
        free, total = torch.cuda.mem_get_info(index)
        return {
            "allocated": int(torch.cuda.memory_allocated(index)),
            "reserved": int(torch.cuda.memory_reserved(index)),
            "free": int(free),
            "total": int(total),
        }
    except Exception as error:  # noqa: BLE001 - a heartbeat must not fail over a GPU query
        log.debug("GPU memory query failed: %s", error)
        return None

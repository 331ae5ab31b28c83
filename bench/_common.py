"""What the benches share: one core, best-of timing, the checkout on sys.path, the one JSON line.

Import it first (before numpy, cv2, torch): thread-pool sizes are read when those load.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[1]
# The tests' Mosquitto helper (tests/support/mosquitto.py): benches start the broker the tests check.
TEST_SUPPORT = CHECKOUT / "tests" / "support"
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def use_checkout() -> None:
    """Run from a checkout without installing; never touch the hub."""
    for path in (TEST_SUPPORT, CHECKOUT):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pin_to_one_core() -> int:
    """Every thread of this process (FFmpeg's decoder pool included) on one CPU; returns that CPU.

    Thread-count variables alone would leave FFmpeg, which ignores them, on every core.
    """
    for name in _THREAD_VARS:
        os.environ[name] = "1"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def best_of(
    run: Callable[[], object], repeats: int, *, warm_up: bool = True, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Seconds of the fastest of ``repeats`` runs: on a shared machine, other load only ever adds time.

    ``clock=time.process_time`` times this process's CPU (user + system, page faults included)
    instead of the wall: on a busy machine it leaves out the time other processes held the core.
    """
    if warm_up:
        run()  # lazy allocations, first-run planning
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        run()
        best = min(best, clock() - start)
    return best


def bench_station(
    model: str | Path, *, tile: int, device: str, batch_size: int, threshold: float | None = None, **sections: Any
) -> Any:
    """A parsed station config for the edge benches: a brick wall panel with one defect (scratch), square
    ``tile``-pixel tiles without overlap or global view, ``explanation: never``; ``sections`` add the rest
    (station, source). Needs the checkout importable (``use_checkout``, or an installed package)."""
    from inspector.config import parse_config

    scratch: dict[str, Any] = {"description": "a thin line"}
    if threshold is not None:
        scratch["threshold"] = threshold
    return parse_config({
        **sections,
        "tiling": {"tile": tile, "overlap": 0.0, "global_view": False},
        "model": {"path": str(model), "device": device, "batch_size": batch_size},
        "inspection": {"product": "a brick wall panel", "explanation": "never", "defects": {"scratch": scratch}},
    })  # fmt: skip


def emit(figures: dict[str, Any]) -> None:
    """Print the bench's one JSON line, floats rounded to 3 decimals at any depth."""
    print(json.dumps(_rounded(figures)))


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value

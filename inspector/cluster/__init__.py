"""Replay an archive on a Ray cluster: files and frame ranges spread over Inspector actors.

``replay_on_ray`` is the entry point (``inspector replay --ray``); ``ClusterOptions`` says
how many workers, of what size, with how many frames in flight. Ray itself is imported
only when a cluster replay runs (``pip install 'line-inspector[cluster]'``), and OpenCV
only when these names are first used, so ``inspector --help`` stays instant.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ClusterOptions": "inspector.cluster.driver",
    "ClusterReplay": "inspector.cluster.driver",
    "replay_on_ray": "inspector.cluster.driver",
    "output_path": "inspector.cluster.plan",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)

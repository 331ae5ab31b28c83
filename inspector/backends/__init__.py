"""Model runtimes behind one protocol; ``registry`` maps ``model.backend`` to each backend's plugin."""

from __future__ import annotations

from inspector.backends.base import Backend, BackendConfig, BackendInfo, BackendPlugin, VisualFeatures
from inspector.backends.registry import backend_names, create_backend, plugin_for, runtime_problem

__all__ = [
    "Backend",
    "BackendConfig",
    "BackendInfo",
    "BackendPlugin",
    "VisualFeatures",
    "backend_names",
    "create_backend",
    "plugin_for",
    "runtime_problem",
]

"""The one place backends are registered: name -> config model, loader, runtime requirements.

A backend is a plugin: its module (``inspector/backends/<name>.py``) defines a config model
(a ``BackendConfig`` subclass whose ``backend`` field is a one-value Literal) and a
``PLUGIN`` (a ``BackendPlugin``); listing the module in ``BACKEND_MODULES`` is all it takes for the ``model``
section of the station config to accept it (a discriminated union on ``backend``, built
from this registry), for ``config check`` to check its runtime and for ``--backend`` to
offer it. Backend modules import their runtime (torch, onnxruntime, tensorrt) only when
a model loads, so reading a config stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from inspector.backends.base import Backend, BackendConfig, BackendPlugin
from inspector.errors import ModelError

# The registered backends, in the order `--help` and errors list them; "torch" is the default.
BACKEND_MODULES = ("inspector.backends.torch", "inspector.backends.onnxruntime", "inspector.backends.tensorrt")
DEFAULT_BACKEND = "torch"


def _collect() -> dict[str, BackendPlugin]:
    plugins: dict[str, BackendPlugin] = {}
    for module_name in BACKEND_MODULES:
        plugin: BackendPlugin = importlib.import_module(module_name).PLUGIN
        tag = plugin.config.model_fields["backend"].default
        if tag != plugin.name:  # a copy-pasted plugin with the wrong tag would shadow another backend
            raise RuntimeError(f"{module_name}: PLUGIN name {plugin.name!r} but its config's backend is {tag!r}")
        plugins[plugin.name] = plugin
    return plugins


PLUGINS: dict[str, BackendPlugin] = _collect()


def backend_names() -> list[str]:
    return list(PLUGINS)


def plugin_for(name: str) -> BackendPlugin:
    try:
        return PLUGINS[name]
    except KeyError:
        raise ModelError(f"unknown backend {name!r}", f"use one of: {', '.join(PLUGINS)}") from None


def missing_runtime(name: str) -> list[str]:
    """The modules backend ``name`` needs that cannot be imported here (checked without importing them)."""
    return [module for module in plugin_for(name).requires if importlib.util.find_spec(module) is None]


def runtime_problem(name: str) -> ModelError | None:
    """Why backend ``name`` cannot run in this environment, with the install line; None when it can."""
    missing = missing_runtime(name)
    if not missing:
        return None
    return ModelError(
        f"backend {name!r} needs {', '.join(missing)}, which cannot be imported in this environment",
        PLUGINS[name].install,
    )


def create_backend(config: BackendConfig, *, tile: int | None = None) -> tuple[Backend, Any]:
    """The backend for a validated ``model`` section, and the checkpoint's tokenizer.

    ``tile`` lets backends with graphs or engines baked for one tile size refuse a mismatch at start.
    """
    problem = runtime_problem(config.backend)
    if problem is not None:
        raise problem
    return plugin_for(config.backend).load(config, tile)

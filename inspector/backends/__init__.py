"""Backend selection: the config's ``model.backend`` -> an object implementing ``Backend``."""

from __future__ import annotations

from typing import Any

from inspector.backends.base import Backend, BackendInfo, VisualFeatures
from inspector.config import ModelConfig
from inspector.errors import ModelError

__all__ = ["Backend", "BackendInfo", "VisualFeatures", "create_backend"]


def create_backend(config: ModelConfig, *, tile: int | None = None) -> tuple[Backend, Any]:
    """Returns the backend and the checkpoint's tokenizer (prompts are built on the host for every backend).

    ``tile`` lets backends with graphs baked for one tile size refuse a mismatch at start.
    """
    if config.backend == "torch":
        from inspector.backends.torch import TorchBackend
        from inspector.models import load_model

        loaded = load_model(config.path, dtype=config.dtype, device=config.device)
        return TorchBackend(loaded), loaded.tokenizer
    if config.backend == "onnxruntime":
        from inspector.backends.onnxruntime import create_onnxruntime_backend
        from inspector.models import load_tokenizer

        return create_onnxruntime_backend(config, tile=tile), load_tokenizer(config.path)
    raise ModelError(
        "backend 'tensorrt' needs the TensorRT engines and the tensorrt package, which this build does not include",
        "use backend: onnxruntime (CPU or CUDA) or torch",
    )

"""The backend protocol on TensorRT engines (FP8 on Ada / Hopper / Blackwell / Jetson Thor).

``model.backend: tensorrt`` reads the engines built from the exported ONNX graphs
(``engine_dir``; ``onnx_dir`` is where they were built from, for rebuilding on this GPU).
TensorRT runs on NVIDIA GPUs only; FP8 needs compute capability >= 8.9 (Jetson Orin and
Ampere have none: build FP16 engines there).

Skeleton: the config model and the checks that name what to install are here; engine
loading and running come with the FP8 / TensorRT work.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from inspector.backends.base import BackendConfig, BackendPlugin, Precision
from inspector.errors import ModelError

log = logging.getLogger(__name__)

INSTALL = (
    "pip install tensorrt (NVIDIA's wheel, matching the CUDA driver); it needs an NVIDIA GPU "
    "(compute capability >= 7.5; FP8 engines need >= 8.9: Ada L4/L40S/RTX 40, Hopper H100/H200, "
    "Blackwell, Jetson Thor); elsewhere use backend onnxruntime or torch"
)
FP8_MIN_CAPABILITY = (8, 9)


class TensorRTConfig(BackendConfig):
    """``model.backend: tensorrt``: prebuilt TensorRT engines on an NVIDIA GPU."""

    backend: Literal["tensorrt"] = "tensorrt"
    engine_dir: Path = Field(description="TensorRT engines built by `inspector export` for this GPU")
    onnx_dir: Path | None = Field(None, description="the exported ONNX graphs the engines were built from")
    dtype: Precision = "fp8"
    device: str = Field("cuda", description="cuda or cuda:N (TensorRT runs on NVIDIA GPUs only)")

    devices: ClassVar[re.Pattern[str]] = re.compile(r"^(auto|cuda(:\d+)?)$")
    devices_help: ClassVar[str] = "cuda or cuda:N (TensorRT runs on NVIDIA GPUs only)"


def _require_runtime() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise ModelError("backend tensorrt needs the tensorrt package, which is not installed", INSTALL) from None
    return tensorrt


def _require_gpu(device: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise ModelError(f"backend tensorrt needs an NVIDIA GPU, but none is visible (model.device {device})", INSTALL)


class TensorRTBackend:
    """Runs encode / prefill / generate on TensorRT engines (not implemented yet)."""

    def __init__(self, config: TensorRTConfig) -> None:
        _require_runtime()
        _require_gpu(config.device)
        raise ModelError(
            f"loading TensorRT engines from {config.engine_dir} is not implemented yet",
            "use backend onnxruntime (model.onnx_dir) or torch for now",
        )


def load_tensorrt_backend(config: TensorRTConfig, tile: int | None = None) -> tuple[TensorRTBackend, Any]:
    from inspector.models import load_tokenizer

    backend = TensorRTBackend(config)
    return backend, load_tokenizer(config.path)


PLUGIN = BackendPlugin(
    name="tensorrt",
    config=TensorRTConfig,
    load=load_tensorrt_backend,
    requires=("tensorrt",),
    install=INSTALL,
    summary="TensorRT engines (FP8 / FP16) on an NVIDIA GPU",
)

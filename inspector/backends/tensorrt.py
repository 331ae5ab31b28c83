"""The backend protocol on TensorRT engines (FP8 on Ada / Hopper / Blackwell / Jetson Thor).

``model.backend: tensorrt`` reads the engines built from the exported ONNX graphs
(``engine_dir``; ``onnx_dir`` is where they were built from, for rebuilding on this GPU).
TensorRT runs on NVIDIA GPUs only; FP8 needs compute capability >= 8.9 (Jetson Orin and
Ampere have none: build FP16 engines there).

The engines come from ``inspector export engine`` (``export.engine``), which records in
``engines.json`` the GPU, compute capability and TensorRT version they were built for; a
mismatch here is refused with the rebuild command (``engine_problem``). Running reuses the
onnxruntime backend's host logic with TensorRT engines in place of ONNX Runtime sessions
(``EngineRunner``: device-resident buffers bound with ``set_tensor_address``,
``execute_async_v3`` on one CUDA stream, the KV cache kept on the GPU, only the logits copied back).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from inspector.backends.base import BackendConfig, BackendInfo, BackendPlugin, Precision
from inspector.backends.onnxruntime import _NUMPY_IO, OnnxRuntimeBackend
from inspector.config_paths import RELATIVE_TO_CONFIG
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
    engine_dir: Path = Field(
        description="TensorRT engines built by `inspector export` for this GPU" + RELATIVE_TO_CONFIG
    )
    onnx_dir: Path | None = Field(
        None,
        description="the exported ONNX graphs the engines were built from" + RELATIVE_TO_CONFIG,
    )
    dtype: Precision = Field("fp8", description="engine precision: fp8 (compute capability >= 8.9) or float16")
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


ENGINE_INDEX = "engines.json"  # written by export.engine.build_engines
_GRAPHS = ("vision", "vision_bytes", "verdict", "decoder")
BUILD = "build them with `inspector export engine --onnx ONNX_DIR --out ENGINE_DIR` on this machine"


def engine_problem(index: dict[str, Any], device: dict[str, Any], graphs: tuple[str, ...]) -> str | None:
    """Why the engines of ``index`` cannot run on ``device`` (GPU name, capability, TensorRT), or None.

    Pure: engines are specific to the GPU model, compute capability and TensorRT version they were
    built with, so a mismatch is a rebuild, never a crash inside TensorRT.
    """
    if index.get("format") != "line-inspector-engines":
        return "it holds no line-inspector engine index"
    built = index.get("device", {})
    for field in ("gpu", "capability", "tensorrt"):
        if list(np.atleast_1d(built.get(field))) != list(np.atleast_1d(device.get(field))):
            return (
                f"its engines were built for {built.get('gpu')} (compute capability {built.get('capability')}, "
                f"TensorRT {built.get('tensorrt')}), this is {device.get('gpu')} (compute capability "
                f"{device.get('capability')}, TensorRT {device.get('tensorrt')})"
            )
    missing = [g for g in graphs if g not in index.get("engines", {})]
    if missing:
        return f"it has no {', '.join(missing)} engine"
    return None


_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT64": "int64", "INT32": "int32",
                 "UINT8": "uint8", "BOOL": "bool", "INT8": "int8"}  # fmt: skip


def plan_bindings(inputs: Sequence[str], outputs: Sequence[str], host: Sequence[str],
                  device_inputs: Sequence[str]) -> dict[str, str]:  # fmt: skip
    """How each engine tensor is bound for one run (pure, tested without a GPU).

    Inputs: "device" when the caller passes a CUDA tensor from an earlier run (the KV cache),
    bound as it is; "upload" for host arrays, copied to the device once. Outputs: "host" for
    the few the caller reads (option logits, decode logits, visual features), "device" for
    the rest (the KV cache), which stay on the GPU for the next call.
    """
    missing = set(host) - set(outputs)
    if missing:
        raise ValueError(f"the engine has no output(s) {', '.join(sorted(missing))}")
    plan = {name: "device" if name in device_inputs else "upload" for name in inputs}
    plan.update({name: "host" if name in host else "device" for name in outputs})
    return plan


class EngineRunner:
    """One engine, its execution context and the backend's one CUDA stream, on device-resident buffers.

    ``run(feeds, host)`` has ``OrtGraph.run``'s signature, so the host-side logic of the
    onnxruntime backend (embedding lookup, M-RoPE positions, DeepStack scatter) drives
    TensorRT unchanged: inputs are numpy arrays (uploaded) or torch CUDA tensors from an
    earlier run (bound by address, no copy); every output is a torch CUDA tensor bound with
    ``set_tensor_address`` before ``execute_async_v3``, and only the ``host`` ones are copied
    back. The KV cache therefore stays on the GPU from prefill through every decode step.
    """

    def __init__(self, trt: Any, runtime: Any, path: Path, stream: Any, device: Any) -> None:
        import torch

        self._torch, self._stream, self._device = torch, stream, device
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelError(f"TensorRT cannot load the engine {path}", f"rebuild it: {BUILD}")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: getattr(torch, _TORCH_DTYPES[engine.get_tensor_dtype(n).name]) for n in names}
        self._placeholder: dict[Any, Any] = {}  # one valid address per dtype for empty tensors

    def _address(self, tensor: Any) -> int:
        # Empty tensors (a prefill's zero-length past) still need a valid address.
        if tensor.numel():
            return tensor.data_ptr()
        if tensor.dtype not in self._placeholder:
            self._placeholder[tensor.dtype] = self._torch.empty(1, dtype=tensor.dtype, device=self._device)
        return self._placeholder[tensor.dtype].data_ptr()

    def run(self, feeds: dict[str, Any], host: Sequence[str]) -> tuple[list[np.ndarray], dict[str, Any]]:
        torch = self._torch
        device_inputs = [n for n, v in feeds.items() if isinstance(v, torch.Tensor) and v.is_cuda]
        plan = plan_bindings(self.inputs, self.outputs, host, device_inputs)
        keep = []  # uploaded inputs must outlive the launch
        with torch.cuda.stream(self._stream):
            for name in self.inputs:
                value = feeds[name]
                if plan[name] == "upload":
                    value = torch.from_numpy(np.ascontiguousarray(value)).to(self._device, self._dtypes[name])
                elif value.dtype != self._dtypes[name] or not value.is_contiguous():
                    value = value.to(self._dtypes[name]).contiguous()
                self.context.set_input_shape(name, tuple(value.shape))
                self.context.set_tensor_address(name, self._address(value))
                keep.append(value)
            outputs = {}
            for name in self.outputs:
                tensor = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtypes[name],
                                     device=self._device)  # fmt: skip
                self.context.set_tensor_address(name, self._address(tensor))
                outputs[name] = tensor
            if not self.context.execute_async_v3(self._stream.cuda_stream):
                raise ModelError("TensorRT failed to run an engine", "see the TensorRT log; rebuild the engines")
            # Only what the caller reads crosses to the host (after the launch, on the same stream).
            fetched = [outputs[n].float() if outputs[n].is_floating_point() else outputs[n] for n in host]
            fetched = [t.to("cpu", non_blocking=False) for t in fetched]
        self._stream.synchronize()
        return [t.numpy() for t in fetched], {n: t for n, t in outputs.items() if plan[n] == "device"}

    def take_rows(self, values: list[Any], rows: np.ndarray, batch: int) -> list[Any]:
        """The KV cache of ``rows`` only, gathered on the GPU."""
        if len(rows) == batch and np.array_equal(rows, np.arange(batch)):
            return values
        index = self._torch.as_tensor(rows, device=self._device)
        with self._torch.cuda.stream(self._stream):
            taken = [v.index_select(0, index) for v in values]
        self._stream.synchronize()
        return taken


class TensorRTBackend(OnnxRuntimeBackend):
    """encode / prefill / generate on TensorRT engines: the onnxruntime backend's host logic, TensorRT's kernels.

    Graph inputs and outputs live in device buffers on one CUDA stream per backend; the KV
    cache stays on the GPU between prefill and decode (``EngineRunner``), and only the option
    logits (a verdict) or one position's logits (a decode step) are copied back.
    """

    def __init__(self, config: TensorRTConfig) -> None:
        import json

        import torch

        from inspector.artifacts.manifest import read_manifest

        trt = _require_runtime()
        _require_gpu(config.device)
        engine_dir = Path(config.engine_dir).expanduser()
        index_path = engine_dir / ENGINE_INDEX
        if not index_path.is_file():
            raise ModelError(f"{engine_dir} has no {ENGINE_INDEX}: no TensorRT engines were built there", BUILD)
        index = json.loads(index_path.read_text())
        device = torch.device(config.device if config.device != "auto" else "cuda")
        here = {
            "gpu": torch.cuda.get_device_name(device),
            "capability": list(torch.cuda.get_device_capability(device)),
            "tensorrt": trt.__version__,
        }
        problem = engine_problem(index, here, _GRAPHS)
        if problem is not None:
            raise ModelError(f"cannot run the engines in {engine_dir}: {problem}", f"rebuild them: {BUILD}")
        self.onnx_dir = Path(config.onnx_dir or index["onnx_dir"]).expanduser()
        self.manifest = manifest = read_manifest(self.onnx_dir)
        self._io = _NUMPY_IO[manifest.io_dtype]
        self._embedding = np.load(self.onnx_dir / manifest.embedding["file"], mmap_mode="r")
        self._bf16_table = manifest.embedding["dtype"] == "bfloat16"
        text = manifest.text
        self._layers, self._kv_heads, self._head_dim = text["layers"], text["kv_heads"], text["head_dim"]
        self._hidden, self._deepstack_layers = text["hidden"], text["deepstack_layers"]
        self.image_token_id = manifest.token_ids["image"]
        self.info = BackendInfo("tensorrt", manifest.effective_precision, manifest.model.name,
                                manifest.model.random_weights, str(device), manifest.model.demo_model)  # fmt: skip
        self._stream = torch.cuda.Stream(device=device)
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        self._sessions = {
            graph: EngineRunner(trt, runtime, engine_dir / index["engines"][graph]["file"], self._stream, device)
            for graph in _GRAPHS
        }
        self._keep = (logger, runtime)  # engines must not outlive their runtime

    def _session(self, name: str) -> EngineRunner:
        return self._sessions[name]


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

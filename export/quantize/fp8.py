"""FP8 (E4M3) post-training quantisation with NVIDIA ModelOpt, exported as standard ONNX Q/DQ.

Recipe (ModelOpt's VLM PTQ default, vLLM/llm-compressor practice):

- ``mtq.FP8_DEFAULT_CFG``: per-tensor E4M3 scales for the weights and the input activations
  of every ``nn.Linear`` of the language model, max calibration; ``lm_head`` stays out, and so
  does the whole vision tower (``*visual*``) unless ``quantize_vision`` — then only the vision
  blocks' linears (qkv, proj, fc1, fc2), never the patch embedding or the mergers (projector).
  Norms are never quantised.
- Calibration runs the station's real inference (``TileClassifier`` over ``TorchBackend``,
  the prompt of the station's inspection section) on tiles of the line's footage
  (``export.quantize.calibration``).
- ONNX: the quantisers trace as ModelOpt's ``trt::TRT_FP8{Quantize,Dequantize}Linear``;
  ``export.quantize.streaming_qdq`` folds each weight into FP8 bytes + ``DequantizeLinear`` and
  turns the activation pairs into standard ``QuantizeLinear``/``DequantizeLinear`` with a
  ``float8e4m3fn`` zero point — ModelOpt's ``FP8QuantExporter`` rewrite, but one weight at a
  time (ModelOpt's holds the whole graph with its weights: tens of GB for the 4B), so ONNX
  Runtime and TensorRT load the same standard graph.

The text graph calls its linears as ``x @ W^T`` on pre-transposed weights (see
``export.text_graph``), bypassing ``QuantLinear.forward``; ``QuantizedTextGraph`` applies the
layer's own two quantisers around that matmul. Per-tensor scales make quantising ``W^T`` the
same as quantising ``W``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from export.quantize.calibration import CalibrationSet
from export.quantize.streaming_qdq import rewrite_fp8_qdq
from export.text_graph import TextGraph
from inspector.config import InspectionConfig
from inspector.errors import InspectorError

log = logging.getLogger(__name__)

PRECISION = "fp8"
FP8_FORMAT = "float8e4m3fn"
INSTALL_HINT = "pip install 'line-inspector[fp8]' (NVIDIA ModelOpt with the parts of its ONNX exporter it imports)"
_VISION_LINEARS = ("attn.qkv", "attn.proj", "mlp.linear_fc1", "mlp.linear_fc2")
_E4M3 = {"num_bits": (4, 3), "axis": None}


class QuantizationError(InspectorError):
    """FP8 quantisation cannot run (missing package, bad arguments, an unexpected graph)."""


def _mtq() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "transformers 5.x is not tested with modelopt": our parity tests are
            import modelopt.torch.quantization as mtq
    except ImportError as error:
        raise QuantizationError(f"FP8 export needs NVIDIA ModelOpt ({error})", INSTALL_HINT) from None
    return mtq


def require_modelopt() -> None:
    """Fail now, naming the install, rather than after minutes of calibration."""
    _mtq()


def quant_config(*, quantize_vision: bool = False) -> dict[str, Any]:
    """ModelOpt's FP8 default (language model linears, E4M3, max calibration), optionally + vision blocks."""
    config = copy.deepcopy(_mtq().FP8_DEFAULT_CFG)
    if quantize_vision:
        # Later entries override earlier ones: re-enable only the blocks' linears under the *visual* exclusion.
        for linear in _VISION_LINEARS:
            for quantizer in ("weight_quantizer", "input_quantizer"):
                config["quant_cfg"].append({"quantizer_name": f"*visual.blocks.*.{linear}.{quantizer}", "cfg": _E4M3})
    return config


def _amax(quantizer: Any) -> float | None:
    amax = getattr(quantizer, "amax", None)
    return None if amax is None else float(amax.detach().float().max())


def quantized_layers(model: Any) -> dict[str, dict[str, float | None]]:
    """Every linear whose weights are FP8 after ``mtq.quantize``, with its calibrated ranges."""
    layers = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight_quantizer", None)
        if weight is not None and weight.is_enabled:
            layers[name] = {
                "weight_amax": _amax(weight),
                "input_amax": _amax(module.input_quantizer) if module.input_quantizer.is_enabled else None,
            }
    return layers


def calibrate(
    model: Any, tokenizer: Any, inspection: InspectionConfig, calibration: CalibrationSet, *,
    quantize_vision: bool = False, batch: int = 4,
) -> dict[str, dict[str, float | None]]:  # fmt: skip
    """Insert ModelOpt's FP8 quantisers into ``model`` (in place) and calibrate them on the tiles.

    Runs the station's own inference: encode, then the verdict prefill of the inspection prompt.
    Returns the quantised layers (``quantized_layers``).
    """
    from rich.console import Console
    from rich.progress import Progress

    from inspector.backends.torch import TorchBackend
    from inspector.classify import TileClassifier
    from inspector.models import LoadedModel

    mtq = _mtq()
    if batch < 1:
        raise QuantizationError(f"calibration batch {batch} is not positive", "use a batch of 1 or more")
    loaded = LoadedModel(model, tokenizer, "calibration", False, str(model.dtype).removeprefix("torch."), "cpu")
    # Verdicts only: explanations would calibrate on the model's own random or greedy text.
    quiet = inspection.model_copy(update={"explanation": "never"})
    classifier = TileClassifier(TorchBackend(loaded), tokenizer, quiet, batch_size=batch)

    def forward_loop(_: Any) -> None:
        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("FP8 calibration", total=calibration.tiles)
            for start in range(0, calibration.tiles, batch):
                chunk = calibration.patches[start : start + batch]
                classifier.classify(chunk, calibration.grid_thw)
                progress.advance(task, len(chunk))

    printed = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):  # ModelOpt prints what it registers
        warnings.simplefilter("ignore")
        mtq.quantize(model, quant_config(quantize_vision=quantize_vision), forward_loop)
    log.debug("mtq.quantize: %s", printed.getvalue().strip())
    layers = quantized_layers(model)
    if not layers:
        raise QuantizationError("ModelOpt quantised no layer of this model", "check that it is a Qwen3-VL checkpoint")
    missing = [name for name, ranges in layers.items() if ranges["input_amax"] is None]
    if missing:
        raise QuantizationError(f"calibration never reached {len(missing)} layers (e.g. {missing[0]})",
                                "calibrate on more tiles with --calib-tiles")  # fmt: skip
    log.info("FP8: %d linear layers quantised (weights + input activations)", len(layers))
    return layers


class QuantizedTextGraph(TextGraph):
    """``TextGraph`` whose linears run through their ModelOpt quantisers (input, then weight)."""

    def _linear(self, x: torch.Tensor, index: int, owner: Any, name: str) -> torch.Tensor:
        linear = getattr(owner, name)
        weight = self.weights_t[f"layer{index}_{name}"]
        inputs = getattr(linear, "input_quantizer", None)
        weights = getattr(linear, "weight_quantizer", None)
        if inputs is not None:
            x = inputs(x)
        if weights is not None:
            weight = weights(weight)  # per-tensor: the same FP8 values as quantising W
        out = torch.matmul(x, weight)
        return out if linear.bias is None else out + linear.bias


def qdq_counts(model: Any) -> dict[str, int]:
    import onnx

    fp8_weights = sum(  # zero points are 1-element FP8 tensors too
        1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT8E4M3FN and math.prod(t.dims) > 1
    )
    return {
        "quantize_linear": sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear"),
        "dequantize_linear": sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear"),
        "fp8_weights": fp8_weights,
    }


@dataclass
class Fp8Export:
    """The hooks ``export.onnx_export.export_model`` calls to write FP8 graphs (see its ``quantization``)."""

    calibration: CalibrationSet
    layers: dict[str, dict[str, float | None]]
    quantize_vision: bool = False
    graphs: dict[str, dict[str, int]] = field(default_factory=dict)

    def text_graph(self, model: Any, form: str, io_dtype: torch.dtype) -> TextGraph:
        return QuantizedTextGraph(model, form, io_dtype)

    def process_graph(self, name: str, path: Path) -> None:
        """Rewrite the traced graph at ``path`` into standard FP8 Q/DQ, in place, one weight at a time."""
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        if any(node.domain == "trt" for node in model.graph.node):
            del model
            rewrite_fp8_qdq(path)  # nothing to do for graphs without quantisers (the vision tower by default)
            model = onnx.load(str(path), load_external_data=False)
        self.graphs[name] = qdq_counts(model)

    def describe(self) -> dict[str, Any]:
        """The manifest's ``quantization`` section."""
        return {
            "precision": PRECISION,
            "format": f"QuantizeLinear/DequantizeLinear {FP8_FORMAT}, per-tensor scales; weights stored as FP8",
            "tool": "nvidia-modelopt FP8_DEFAULT_CFG (max calibration)",
            "vision_quantized": self.quantize_vision,
            "calibration": self.calibration.describe(),
            "layers": self.layers,
            "graphs": self.graphs,
        }

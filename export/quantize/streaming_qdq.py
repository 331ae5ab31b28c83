"""ModelOpt's traced FP8 graph -> standard opset-19 FP8 Q/DQ, streaming one weight at a time.

ModelOpt traces its quantisers as ``trt::TRT_FP8QuantizeLinear`` -> ``trt::TRT_FP8DequantizeLinear``
pairs. Its own ``FP8QuantExporter`` rewrites them with onnx-graphsurgeon, which imports the
whole graph *with its weights*: for Qwen3-VL-4B that is the full model a second (and, with
graphsurgeon's copies, a third) time in memory, tens of GB. This pass does the same rewrite
without ever holding more than one weight tensor:

- the graph is read with ``load_external_data=False`` (the protobuf holds names, shapes and
  file offsets, a few MB);
- a pair on a weight initializer becomes ``DequantizeLinear(fp8_weights, scale)``: the weight
  is read from its external-data file (or the graph, when inline), quantised exactly as
  ModelOpt does (``(W / scale).to(float8_e4m3fn)`` in the weight's dtype), appended to a new
  data file beside the graph, and dropped before the next one;
- a pair on an activation becomes ``QuantizeLinear(x, scale, zp) -> DequantizeLinear(q, scale, zp)``
  with a ``float8e4m3fn`` zero point (standard ops: TensorRT and ONNX Runtime CPU run them);
- the ``trt`` opset import goes, and the Q outputs are typed FLOAT8E4M3FN.

Every other node and initializer is left as it is (its external data stays where it was).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from export.external_data import tensor_bytes

log = logging.getLogger(__name__)

TRT_QUANTIZE = "TRT_FP8QuantizeLinear"
TRT_DEQUANTIZE = "TRT_FP8DequantizeLinear"
_FP8 = onnx.TensorProto.FLOAT8E4M3FN
_ALIGN = 4096


class StreamingQdqError(ValueError):
    """The traced graph is not what ModelOpt's FP8 quantisers trace to."""


@dataclass
class QdqRewrite:
    """What one pass did: counts for the manifest, and the largest tensor it held (the peak it adds)."""

    weights: int = 0
    activations: int = 0
    fp8_bytes: int = 0
    largest_tensor_bytes: int = 0
    data_file: str | None = None
    dropped: list[str] = field(default_factory=list)  # weight initializers replaced by their FP8 form


def _scale_tensor(name: str, constants: dict[str, onnx.TensorProto], base: Path) -> np.ndarray:
    """The value of a scale input: a Constant node's tensor or an initializer (both tiny)."""
    if name not in constants:
        raise StreamingQdqError(f"the scale {name!r} of an FP8 quantiser is neither a Constant nor an initializer")
    return _to_array(constants[name], base)


def _to_array(tensor: onnx.TensorProto, base: Path) -> np.ndarray:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.raw_data = tensor_bytes(tensor, base)
        del copy.external_data[:]
        copy.data_location = onnx.TensorProto.DEFAULT
        return numpy_helper.to_array(copy)
    return numpy_helper.to_array(tensor)


def quantize_weight(weight: np.ndarray, scale: np.ndarray) -> bytes:
    """FP8 E4M3 bytes of ``weight / scale``, the same arithmetic as ModelOpt's ``FP8QuantExporter``.

    torch does the division in the weight's dtype and the rounding (to nearest even); the
    scale is the calibrated amax / 448, so nothing saturates.
    """
    import torch

    weights = torch.from_numpy(np.require(weight, requirements=("C", "W")))
    scales = torch.from_numpy(np.require(scale, requirements=("C", "W")))
    return (weights / scales).to(torch.float8_e4m3fn).view(torch.uint8).numpy().tobytes()


class _DataFile:
    """Append-only external data file; tensors start on a 4 KiB boundary (memory-mappable)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("wb")

    def add(self, tensor: onnx.TensorProto, data: bytes) -> None:
        offset = -(-self._handle.tell() // _ALIGN) * _ALIGN
        self._handle.seek(offset)
        self._handle.write(data)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(offset)), ("length", str(len(data)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value

    def close(self) -> None:
        self._handle.close()


def _fp8_zero_point(name: str) -> onnx.TensorProto:
    tensor = onnx.TensorProto()
    tensor.name, tensor.data_type = name, _FP8
    tensor.dims.append(1)
    tensor.raw_data = b"\x00"
    return tensor


def rewrite_fp8_qdq(path: Path, out: Path | None = None) -> QdqRewrite:
    """Rewrite the traced graph at ``path`` into standard FP8 Q/DQ, FP8 weights in ``<out>.fp8.data``.

    ``out`` defaults to ``path`` (in place). External data of untouched tensors keeps its
    location, so ``out`` must sit in ``path``'s folder.
    """
    path = Path(path)
    out = Path(out) if out is not None else path
    if out.parent.resolve() != path.parent.resolve():
        raise StreamingQdqError(f"{out} must be in the folder of {path}: untouched tensors keep their data files")
    base = path.parent
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    constants: dict[str, onnx.TensorProto] = dict(initializers)
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    result = QdqRewrite()
    data = _DataFile(base / f"{out.name}.fp8.data")
    result.data_file = data.path.name
    kept: list[onnx.NodeProto] = []
    fp8_outputs: set[str] = set()
    new_initializers: list[onnx.TensorProto] = []
    try:
        for node in graph.node:
            if node.domain != "trt" or node.op_type != TRT_QUANTIZE:
                if node.domain == "trt" and node.op_type != TRT_DEQUANTIZE:
                    raise StreamingQdqError(f"unexpected custom op trt::{node.op_type} ({node.name})")
                kept.append(node)
                continue
            pairs = consumers.get(node.output[0], [])
            if len(pairs) != 1 or pairs[0].op_type != TRT_DEQUANTIZE:
                raise StreamingQdqError(f"{node.name}: an FP8 quantiser not followed by exactly one dequantiser")
            dequantize = pairs[0]
            source, scale_name = node.input[0], node.input[1]
            dequantize.domain = ""
            dequantize.op_type = "DequantizeLinear"
            if source in initializers:
                weight = initializers[source]
                array = _to_array(weight, base)
                scale = _scale_tensor(scale_name, constants, base)
                fp8 = onnx.TensorProto()
                fp8.name = f"{node.name or source}/fp8_weights"
                fp8.data_type = _FP8
                fp8.dims.extend(weight.dims)
                payload = quantize_weight(array, scale)
                result.largest_tensor_bytes = max(result.largest_tensor_bytes, array.nbytes + len(payload))
                data.add(fp8, payload)
                del array, payload
                new_initializers.append(fp8)
                result.weights += 1
                result.fp8_bytes += math.prod(weight.dims)
                dequantize.input[0] = fp8.name
                # The DQ's scale must be the weight's scale (ModelOpt traces two equal constants).
                if len(consumers.get(source, [])) == 1:
                    result.dropped.append(source)
                continue  # the Q node is gone: the weight is stored quantised
            zero_point = f"{node.name or node.output[0]}/zero_point"
            new_initializers.append(_fp8_zero_point(zero_point))
            node.domain, node.op_type = "", "QuantizeLinear"
            del node.input[2:]
            node.input.append(zero_point)
            del dequantize.input[2:]
            dequantize.input.append(zero_point)
            fp8_outputs.add(node.output[0])
            result.activations += 1
            kept.append(node)
    finally:
        data.close()
    left = [n for n in kept if n.domain == "trt"]
    if left:
        raise StreamingQdqError(f"{left[0].name}: a dequantiser without its quantiser")
    del graph.node[:]
    graph.node.extend(kept)
    dropped = set(result.dropped)
    survivors = [t for t in graph.initializer if t.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(survivors + new_initializers)
    for value in graph.value_info:
        if value.name in fp8_outputs:
            value.type.tensor_type.elem_type = _FP8
    imports = [entry for entry in model.opset_import if entry.domain != "trt"]
    del model.opset_import[:]
    model.opset_import.extend(imports)
    onnx.save_model(model, str(out))
    log.info("%s: %d FP8 weights (%.1f MB) and %d activation Q/DQ pairs, streamed", out.name, result.weights,
             result.fp8_bytes / 1e6, result.activations)  # fmt: skip
    return result

"""Move the graphs' weights into one external data file, shared by all graphs of an export.

The decoder and verdict graphs hold the same decoder weights; writing each tensor once
(deduplicated by content) halves the export on disk, and one data file keeps every graph
under protobuf's 2 GB limit. Tensors are read and written one at a time, so a 4B export
never holds a second copy of the model in memory. Large tensors start on a 4 KiB boundary
so runtimes can memory-map them.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import onnx
from onnx import numpy_helper

log = logging.getLogger(__name__)

DATA_FILE = "weights.onnx.data"
_INLINE_BELOW = 1024  # bytes: shape constants and the like stay inside the graph
_PAGE = 4096
_PAGE_ALIGN_FROM = 1 << 20
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data", "raw_data")


class SharedWeights:
    """Append-only data file; ``add`` returns where a tensor's bytes live, writing them once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._handle = self.path.open("wb")
        self._seen: dict[tuple[bytes, int], int] = {}
        self.bytes_written = 0
        self.bytes_shared = 0

    def add(self, data: bytes) -> int:
        key = (hashlib.sha256(data).digest(), len(data))
        if key in self._seen:
            self.bytes_shared += len(data)
            return self._seen[key]
        align = _PAGE if len(data) >= _PAGE_ALIGN_FROM else 64
        offset = -(-self._handle.tell() // align) * align
        self._handle.seek(offset)
        self._handle.write(data)
        self._seen[key] = offset
        self.bytes_written += len(data)
        return offset

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> SharedWeights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tensor_bytes(tensor: onnx.TensorProto, base: Path) -> bytes:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        info = {entry.key: entry.value for entry in tensor.external_data}
        with (base / info["location"]).open("rb") as handle:
            handle.seek(int(info.get("offset", 0)))
            length = info.get("length")
            return handle.read(int(length)) if length is not None else handle.read()
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.to_array(tensor).tobytes()


def _constants_to_initializers(graph: onnx.GraphProto, base: Path) -> None:
    """Large ``Constant`` nodes (the exporter bakes buffers such as the vision rotary tables
    this way, once per layer) become initializers, so they move out too, stored once."""
    kept = []
    for node in graph.node:
        attribute = node.attribute[0] if len(node.attribute) == 1 else None
        if (
            node.op_type == "Constant"
            and node.domain in ("", "ai.onnx")
            and attribute is not None
            and attribute.name == "value"
            and len(tensor_bytes(attribute.t, base)) >= _INLINE_BELOW
        ):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attribute.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def relocate_weights(source: Path, target: Path, shared: SharedWeights) -> None:
    """Rewrite the graph at ``source`` (inline or per-tensor external data) to ``target``,
    its initializers moved into ``shared``; ``target`` must sit in the shared file's folder."""
    model = onnx.load(str(source), load_external_data=False)
    _constants_to_initializers(model.graph, source.parent)
    for tensor in model.graph.initializer:
        data = tensor_bytes(tensor, source.parent)
        for field in _TYPED_FIELDS:
            tensor.ClearField(field)
        del tensor.external_data[:]
        if len(data) < _INLINE_BELOW:
            tensor.data_location = onnx.TensorProto.DEFAULT
            tensor.raw_data = data
            continue
        offset = shared.add(data)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", shared.path.name), ("offset", str(offset)), ("length", str(len(data)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    onnx.save_model(model, str(target))
    log.info("wrote %s (%d initializers)", target.name, len(model.graph.initializer))

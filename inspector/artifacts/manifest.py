"""``manifest.json``: what an ONNX export directory holds and which model it came from.

Backends read it instead of guessing: graph files and their inputs/outputs (shapes with
symbolic dims, dtypes), the tile size and patch grid the vision graph is baked for, the
export and I/O dtypes, the token ids the host needs, and the model's identity (config
hash, weights hash) so graphs are never run against the wrong checkpoint or config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from inspector.artifacts.identity import ModelIdentity
from inspector.errors import ModelError

MANIFEST = "manifest.json"
FORMAT = "line-inspector-onnx"
FORMAT_VERSION = 1
REQUIRED_GRAPHS = frozenset({"vision", "vision_bytes", "verdict", "decoder"})

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.UINT8: "uint8",
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # ints are fixed, strings are symbolic (batch, past, ...)
    dtype: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True, slots=True)
class GraphSpec:
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GraphSpec:
        def specs(items: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in items)

        return cls(str(data["file"]), specs(data["inputs"]), specs(data["outputs"]))


def describe_graph(path: Path) -> GraphSpec:
    """Inputs and outputs of an ONNX file, read without loading its weights."""
    model = onnx.load(str(path), load_external_data=False)

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim)
        return TensorSpec(value.name, dims, _ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type)))

    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(spec(v) for v in model.graph.input if v.name not in initializers)
    return GraphSpec(path.name, inputs, tuple(spec(v) for v in model.graph.output))


@dataclass(frozen=True, slots=True)
class Manifest:
    model: ModelIdentity
    tile: int
    grid_thw: tuple[int, int, int]
    tokens_per_tile: int
    dtype: str  # weights and compute inside the graphs
    io_dtype: str  # float tensors at the graph boundary (float32 for bfloat16 exports: numpy has no bfloat16)
    opset: int
    graphs: dict[str, GraphSpec]  # REQUIRED_GRAPHS
    embedding: dict[str, Any]  # {"file", "dtype", "shape"}: the token embedding table, read on the host
    text: dict[str, int]  # hidden, layers, heads, kv_heads, head_dim, vocab_size, deepstack_layers
    token_ids: dict[str, int]
    spatial_merge: int
    external_data: str | None
    exporter: dict[str, str] = field(default_factory=dict)
    precision: str | None = None  # "fp8" for Q/DQ graphs; None: the dtype is the precision
    quantization: dict[str, Any] | None = None  # fp8: calibration fingerprint, tiles, quantised layers

    @property
    def effective_precision(self) -> str:
        return self.precision or self.dtype

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model.to_json(),
            "tile": self.tile,
            "grid_thw": list(self.grid_thw),
            "tokens_per_tile": self.tokens_per_tile,
            "dtype": self.dtype,
            "io_dtype": self.io_dtype,
            "opset": self.opset,
            "graphs": {name: spec.to_json() for name, spec in self.graphs.items()},
            "embedding": self.embedding,
            "text": self.text,
            "token_ids": self.token_ids,
            "spatial_merge": self.spatial_merge,
            "external_data": self.external_data,
            "exporter": self.exporter,
            "precision": self.effective_precision,
            "quantization": self.quantization,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            model=ModelIdentity.from_json(data["model"]),
            tile=int(data["tile"]),
            grid_thw=tuple(int(v) for v in data["grid_thw"]),  # type: ignore[arg-type]
            tokens_per_tile=int(data["tokens_per_tile"]),
            dtype=str(data["dtype"]),
            io_dtype=str(data["io_dtype"]),
            opset=int(data["opset"]),
            graphs={name: GraphSpec.from_json(spec) for name, spec in data["graphs"].items()},
            embedding=dict(data["embedding"]),
            text={k: int(v) for k, v in data["text"].items()},
            token_ids={k: int(v) for k, v in data["token_ids"].items()},
            spatial_merge=int(data["spatial_merge"]),
            external_data=data.get("external_data"),
            exporter=dict(data.get("exporter", {})),
            precision=data.get("precision") if data.get("precision") != data["dtype"] else None,
            quantization=data.get("quantization"),
        )


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    path = Path(directory) / MANIFEST
    path.write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return path


def read_manifest(directory: str | Path) -> Manifest:
    """Read and check ``manifest.json``; every problem is a ModelError naming the fix."""
    directory = Path(directory)
    path = directory / MANIFEST
    fix = "export the graphs with `inspector export onnx --model DIR --tile N --out DIR`"
    if not directory.is_dir():
        raise ModelError(f"ONNX directory {directory} does not exist", fix)
    if not path.is_file():
        raise ModelError(f"{directory} has no {MANIFEST}: it is not a line-inspector ONNX export", fix)
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        raise ModelError(f"{path} is not valid JSON: {error}", fix) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"{path} is not a line-inspector ONNX manifest", fix)
    if data.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{path} has format version {data.get('format_version')}, this line inspector reads {FORMAT_VERSION}",
            "re-export the graphs with this version",
        )
    try:
        manifest = Manifest.from_json(data)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelError(f"{path} is incomplete or malformed ({error!r})", fix) from None
    absent = sorted(REQUIRED_GRAPHS - set(manifest.graphs))
    if absent:
        raise ModelError(f"{path} lists no {', '.join(absent)} graph(s): it was written by another version", fix)
    missing = [spec.file for spec in manifest.graphs.values() if not (directory / spec.file).is_file()]
    if manifest.external_data and not (directory / manifest.external_data).is_file():
        missing.append(manifest.external_data)
    if not (directory / manifest.embedding["file"]).is_file():
        missing.append(manifest.embedding["file"])
    if missing:
        raise ModelError(f"{directory} is missing {', '.join(missing)} listed in its manifest", fix)
    return manifest

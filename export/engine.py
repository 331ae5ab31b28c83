"""Exported ONNX graphs -> TensorRT engines for this GPU, cached so an unchanged build never reruns.

``build_engines`` parses each graph (``vision``, ``vision_bytes``, ``verdict``, ``decoder``)
with TensorRT's ONNX parser into a **strongly typed** network — every tensor keeps the type
the graph gives it, so the FP8 ``QuantizeLinear``/``DequantizeLinear`` pairs pick FP8
tactics and float16 graphs run in float16 (the flag TensorRT 10 needs; TensorRT 11 is
strongly typed only and ignores it) — with one optimisation profile per graph (tile batch;
prompt length and KV length, see ``profile_shapes``) and one timing cache shared by all
builds (kept beside the engines: a rebuild on the same GPU reuses the kernel timings).

The engine directory holds ``engines.json``: per graph, the engine file and its cache key
(``engine_key``: GPU name, compute capability, TensorRT version, the graph's sha256 with
its weights, the profile). A build whose key is unchanged is skipped; a new GPU, TensorRT,
graph or profile rebuilds exactly the engines it affects (``stale_graphs``).

Everything that decides *what* to build is a pure function, tested without TensorRT; the
build itself needs ``tensorrt`` and an NVIDIA GPU, and says so when either is missing.
FP8 graphs are refused below compute capability 8.9 with the FP16 alternative.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inspector.artifacts.manifest import GraphSpec, Manifest, read_manifest
from inspector.backends.fp8 import fp8_capability_problem
from inspector.errors import InspectorError

log = logging.getLogger(__name__)

ENGINE_INDEX = "engines.json"
TIMING_CACHE = "timing.cache"
ENGINE_GRAPHS = ("vision", "vision_bytes", "verdict", "decoder")
INSTALL = (
    "pip install 'line-inspector[tensorrt]' (NVIDIA's tensorrt wheel, matching the CUDA driver) on a machine "
    "with an NVIDIA GPU; without one, run the ONNX graphs with backend onnxruntime"
)
FP16_HINT = (
    "this GPU has no FP8: export float16 graphs instead (`inspector export onnx --dtype float16`, no --precision fp8) "
    "and build their engines"
)
DEFAULT_PROMPT_MARGIN = 512  # text tokens beside the image tokens a prompt may hold (product, defects, question)
DEFAULT_DECODE_TOKENS = 256  # explanation / reasoning tokens after the prompt
_WORKSPACE = 8 << 30


class EngineError(InspectorError):
    """Engines cannot be built or loaded here (no TensorRT, no GPU, no FP8, bad arguments)."""


@dataclass(frozen=True, slots=True)
class Range:
    """One dynamic dimension of an optimisation profile: min <= opt <= max."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.opt <= self.max:
            raise EngineError(f"range {self.min}:{self.opt}:{self.max} is not 0 <= MIN <= OPT <= MAX",
                              "give MIN:OPT:MAX, e.g. --batch 1:8:32")  # fmt: skip

    @classmethod
    def fixed(cls, value: int) -> Range:
        return cls(value, value, value)

    def plus(self, other: Range) -> Range:
        return Range(self.min + other.min, self.opt + other.opt, self.max + other.max)


def parse_range(text: str, what: str = "--batch") -> Range:
    """``"1:8:32"`` -> Range(1, 8, 32); ``"8"`` -> Range(8, 8, 8). Batch sizes start at 1."""
    parts = text.strip().split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or values[0] < 1:
        raise EngineError(f"{what} {text!r} is not MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX",
                          f"e.g. {what} 1:8:32 (or one number for a fixed size)")  # fmt: skip
    return Range(*values)


@dataclass(frozen=True, slots=True)
class Profile:
    """The dynamic sizes the engines serve: tiles per call, prompt length, KV-cache length."""

    batch: Range
    prompt: Range  # verdict graph: prompt tokens (image + text)
    context: Range  # decoder graph: tokens already in the KV cache
    options: Range  # answer options (classes)

    @classmethod
    def for_manifest(cls, manifest: Manifest, batch: Range, *, classes: int = 4,
                     prompt_margin: int = DEFAULT_PROMPT_MARGIN,
                     decode_tokens: int = DEFAULT_DECODE_TOKENS) -> Profile:  # fmt: skip
        """Lengths from the tile size: a prompt is the tile's image tokens plus up to ``prompt_margin`` text tokens."""
        image = manifest.tokens_per_tile
        prompt = Range(1, image + min(96, prompt_margin), image + prompt_margin)
        context = Range(1, prompt.opt + 32, prompt.max + decode_tokens)
        return cls(batch, prompt, context, Range(1, classes, 26))


def profile_shapes(graph: str, spec: GraphSpec, profile: Profile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Per input of ``graph``: its (min, opt, max) shapes, the symbolic dims filled from ``profile``.

    ``verdict`` is the prefill (empty KV cache in, ``length`` = the prompt); ``decoder`` takes
    one token at a time on a cache of ``past`` tokens (``total`` = past + 1).
    """
    one = Range.fixed(1)
    if graph == "verdict":
        dims = {"length": profile.prompt, "past": Range.fixed(0), "options": profile.options}
    elif graph == "decoder":
        dims = {"length": one, "past": profile.context}
    elif graph in ("vision", "vision_bytes"):
        dims = {}
    else:
        raise EngineError(f"no engine profile for graph {graph!r}", f"build one of {', '.join(ENGINE_GRAPHS)}")
    dims["batch"] = profile.batch
    if "length" in dims and "past" in dims:
        dims["total"] = dims["past"].plus(dims["length"])
    shapes = {}
    for tensor in spec.inputs:
        ranges = []
        for dim in tensor.shape:
            if isinstance(dim, int):
                ranges.append(Range.fixed(dim))
            elif dim in dims:
                ranges.append(dims[dim])
            else:
                raise EngineError(f"{spec.file}: input {tensor.name} has a dimension {dim!r} no profile covers",
                                  "re-export the graphs with this version of line-inspector")  # fmt: skip
        shapes[tensor.name] = tuple(tuple(getattr(r, end) for r in ranges) for end in ("min", "opt", "max"))
    return shapes


@dataclass(frozen=True, slots=True)
class Device:
    """What an engine is specific to: the GPU model, its compute capability, TensorRT's version."""

    gpu: str
    capability: tuple[int, int]
    tensorrt: str


def engine_key(device: Device, onnx_sha256: str, shapes: dict[str, Any]) -> str:
    """The cache key of one engine: any change to the GPU, TensorRT, the graph or its profile changes it."""
    payload = {
        "gpu": device.gpu,
        "capability": list(device.capability),
        "tensorrt": device.tensorrt,
        "onnx_sha256": onnx_sha256,
        "profile": {name: [list(s) for s in shape] for name, shape in sorted(shapes.items())},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def stale_graphs(index: dict[str, Any], wanted: dict[str, str], present: set[str]) -> list[str]:
    """The graphs whose engine must be (re)built: no entry, another key, or its file gone."""
    stale = []
    for graph, key in wanted.items():
        entry = index.get("engines", {}).get(graph)
        if entry is None or entry.get("key") != key or entry.get("file") not in present:
            stale.append(graph)
    return stale


def check_fp8_device(precision: str, device: Device) -> None:
    """FP8 engines need compute capability >= 8.9; elsewhere refuse, suggesting FP16."""
    if precision != "fp8":
        return
    problem = fp8_capability_problem(device.gpu, device.capability)
    if problem is not None:
        raise EngineError(f"cannot build FP8 engines: {problem}", FP16_HINT)


def graph_sha256(onnx_dir: Path, spec: GraphSpec, external_data: str | None) -> str:
    """sha256 of the graph file and of the weights it references (streamed, 1 MiB at a time)."""
    digest = hashlib.sha256()
    files = [onnx_dir / spec.file] + ([onnx_dir / external_data] if external_data else [])
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def read_index(engine_dir: Path) -> dict[str, Any]:
    path = Path(engine_dir) / ENGINE_INDEX
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        log.warning("%s is not valid JSON: rebuilding every engine", path)
        return {}
    return data if isinstance(data, dict) else {}


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_bytes(data)
    os.replace(temp, path)  # a crashed build never leaves a half-written engine under the real name


# -- TensorRT (needs the package and a GPU) ----------------------------------------------


def require_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise EngineError("TensorRT is not installed (the tensorrt Python package)", INSTALL) from None
    return tensorrt


def current_device(trt: Any, index: int = 0) -> Device:
    import torch

    if not torch.cuda.is_available():
        raise EngineError("no NVIDIA GPU is visible (torch.cuda.is_available() is False)", INSTALL)
    return Device(torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)), trt.__version__)


def _strongly_typed_flags(trt: Any) -> int:
    major = int(trt.__version__.split(".")[0])
    if major >= 11:
        return 0  # TensorRT 11: every network is strongly typed, the flag is deprecated
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _build_one(trt: Any, logger: Any, onnx_path: Path, shapes: dict[str, Any], cache: Any) -> bytes:
    builder = trt.Builder(logger)
    network = builder.create_network(_strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # reads the external weights beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_path.name}: {errors}", "re-export the graphs (opset 19)")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE)
    config.set_timing_cache(cache, False)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path.name}", "see the TensorRT log above")
    return bytes(serialized)


@dataclass
class BuildReport:
    engine_dir: str
    device: dict[str, Any]
    built: list[str]
    reused: list[str]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_engines(onnx_dir: str | Path, engine_dir: str | Path, batch: Range = Range(1, 8, 32), *,
                  graphs: tuple[str, ...] = ENGINE_GRAPHS, force: bool = False) -> BuildReport:  # fmt: skip
    """Build (or reuse) the engines of an ONNX export for the visible GPU; see the module docstring."""
    onnx_dir, engine_dir = Path(onnx_dir), Path(engine_dir)
    manifest = read_manifest(onnx_dir)
    trt = require_tensorrt()
    device = current_device(trt)
    check_fp8_device(manifest.effective_precision, device)
    profile = Profile.for_manifest(manifest, batch)
    engine_dir.mkdir(parents=True, exist_ok=True)
    index = {} if force else read_index(engine_dir)
    plans = {}
    for graph in graphs:
        spec = manifest.graphs[graph]
        shapes = profile_shapes(graph, spec, profile)
        plans[graph] = (shapes, engine_key(device, graph_sha256(onnx_dir, spec, manifest.external_data), shapes))
    present = {p.name for p in engine_dir.glob("*.engine")}
    stale = stale_graphs(index, {g: key for g, (_, key) in plans.items()}, present)
    began = time.monotonic()
    logger = trt.Logger(trt.Logger.WARNING)
    cache_path = engine_dir / TIMING_CACHE
    cache_builder = trt.Builder(logger)  # kept alive while the cache is in use
    cache_config = cache_builder.create_builder_config()
    cache = cache_config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    entries = dict(index.get("engines", {}))
    for graph in stale:
        shapes, key = plans[graph]
        log.info("building the %s engine (%s, %s)", graph, device.gpu, manifest.effective_precision)
        engine = _build_one(trt, logger, onnx_dir / manifest.graphs[graph].file, shapes, cache)
        file = f"{graph}-{key[:16]}.engine"
        _write_atomic(engine_dir / file, engine)
        old = entries.get(graph, {}).get("file")
        if old and old != file:
            (engine_dir / old).unlink(missing_ok=True)
        entries[graph] = {"file": file, "key": key, "profile": {n: [list(s) for s in v] for n, v in shapes.items()}}
        _write_atomic(cache_path, bytes(cache.serialize()))
        index_json = json.dumps(_index(manifest, onnx_dir, device, entries), indent=2)
        _write_atomic(engine_dir / ENGINE_INDEX, index_json.encode())
    if not stale:
        log.info("engines in %s are up to date for %s", engine_dir, device.gpu)
    return BuildReport(str(engine_dir), asdict(device), stale, [g for g in graphs if g not in stale],
                       round(time.monotonic() - began, 1))  # fmt: skip


def _index(manifest: Manifest, onnx_dir: Path, device: Device, entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": "line-inspector-engines",
        "format_version": 1,
        "onnx_dir": str(onnx_dir),
        "model": manifest.model.to_json(),
        "precision": manifest.effective_precision,
        "tile": manifest.tile,
        "device": asdict(device),
        "engines": entries,
    }

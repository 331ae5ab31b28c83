"""`inspector export check --engine`: each TensorRT engine's graph against ONNX Runtime, with Polygraphy.

NVIDIA's Polygraphy runs one ONNX graph on TensorRT and on ONNX Runtime with the same
generated inputs and compares every output (``polygraphy run GRAPH --trt --onnxrt``). The
TensorRT side is built the way ``export.engine`` builds the engine under test: through
TensorRT's ONNX parser as a strongly typed network (``--strongly-typed``), with the very
optimisation profile recorded in ``engines.json`` and the engine directory's timing cache
(so it picks the same kernels). Inputs are the profile's ``opt`` shapes; integer inputs get
values a real call has (positions, an all-ones attention mask, option ids among the letters,
patch bytes 0-255).

``check_commands`` is pure (tested everywhere); running them needs an NVIDIA GPU, TensorRT
and ``polygraphy`` (``pip install 'line-inspector[tensorrt]'``).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.engine import ENGINE_INDEX, TIMING_CACHE, EngineError
from inspector.artifacts.manifest import read_manifest

log = logging.getLogger(__name__)

INSTALL = "pip install 'line-inspector[tensorrt]' (tensorrt + polygraphy) on a machine with an NVIDIA GPU"
# Element-wise tolerances per precision, on every output. float16: two float16 runtimes with
# different kernels (fused attention, accumulation order): ~1e-2 on logits of a few units.
# FP8: an E4M3 step is 1/8 relative, and TensorRT's FP8 GEMMs round activations where ONNX
# Runtime's emulation rounds them too, but accumulate differently: one flipped rounding moves
# an element by a step; the median error is the honest test, the maximum only a bound.
TOLERANCES = {"float32": (1e-3, 1e-3), "float16": (1e-2, 1e-2), "bfloat16": (5e-2, 5e-2), "fp8": (1e-1, 1e-1)}
# Integer inputs: the values a real call feeds (polygraphy draws uniformly within each range).
VALUE_RANGES = {"position_ids": (0, 64), "attention_mask": (1, 1), "option_ids": (32, 57), "patch_bytes": (0, 255)}


@dataclass(frozen=True, slots=True)
class GraphCheck:
    graph: str
    command: list[str]


def _shape(dims: list[int]) -> str:
    return "[" + ",".join(str(int(d)) for d in dims) + "]"


def check_commands(onnx_dir: str | Path, engine_dir: str | Path, *, atol: float | None = None,
                   rtol: float | None = None, polygraphy: str = "polygraphy") -> list[GraphCheck]:  # fmt: skip
    """One ``polygraphy run GRAPH --trt --onnxrt`` command per engine in ``engine_dir``'s index."""
    onnx_dir, engine_dir = Path(onnx_dir), Path(engine_dir)
    index_path = engine_dir / ENGINE_INDEX
    if not index_path.is_file():
        raise EngineError(
            f"{engine_dir} has no {ENGINE_INDEX}: no engines were built there",
            f"build them first: inspector export engine --onnx {onnx_dir} --out {engine_dir}",
        )
    index = json.loads(index_path.read_text())
    manifest = read_manifest(onnx_dir)
    default_atol, default_rtol = TOLERANCES.get(manifest.effective_precision, TOLERANCES["float16"])
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    checks = []
    for graph, entry in sorted(index.get("engines", {}).items()):
        profile: dict[str, Any] = entry.get("profile") or {}
        if not profile:
            raise EngineError(f"{ENGINE_INDEX} records no profile for the {graph} engine",
                              "rebuild the engines with this version: inspector export engine --force")  # fmt: skip
        command = [polygraphy, "run", str(onnx_dir / manifest.graphs[graph].file), "--trt", "--onnxrt",
                   "--strongly-typed"]  # fmt: skip
        for flag, end in (("--trt-min-shapes", 0), ("--trt-opt-shapes", 1), ("--trt-max-shapes", 2)):
            command += [flag, *(f"{name}:{_shape(shapes[end])}" for name, shapes in profile.items())]
        command += ["--input-shapes", *(f"{name}:{_shape(shapes[1])}" for name, shapes in profile.items())]
        ranges = [f"{name}:[{low},{high}]" for name, (low, high) in VALUE_RANGES.items() if name in profile]
        if ranges:
            command += ["--val-range", *ranges]
        if (engine_dir / TIMING_CACHE).is_file():
            command += ["--load-timing-cache", str(engine_dir / TIMING_CACHE)]
        command += ["--atol", str(atol), "--rtol", str(rtol)]
        if manifest.effective_precision == "fp8":
            command += ["--check-error-stat", "median"]
        checks.append(GraphCheck(graph, command))
    if not checks:
        raise EngineError(f"{ENGINE_INDEX} in {engine_dir} lists no engines", "rebuild: inspector export engine")
    return checks


def run_checks(checks: list[GraphCheck]) -> dict[str, bool]:
    """Run each Polygraphy comparison (its output goes to the terminal); pass/fail per graph."""
    if shutil.which(checks[0].command[0]) is None:
        raise EngineError(f"{checks[0].command[0]} is not installed", INSTALL)
    results = {}
    for check in checks:
        log.info("comparing the %s engine with ONNX Runtime: %s", check.graph, " ".join(check.command))
        results[check.graph] = subprocess.run(check.command, check=False).returncode == 0
    return results

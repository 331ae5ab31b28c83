"""What crosses to the host per verdict (ONNX Runtime IO binding, TensorRT device buffers) and the
Polygraphy engine check's command lines.

Pure parts run everywhere: which outputs a run binds to the host (only the option logits of a
verdict, one position's logits of a decode step), how TensorRT's tensors are bound, the
``polygraphy run --trt --onnxrt`` command per engine. The ONNX Runtime backend on CPU keeps
its KV cache in ONNX Runtime's own buffers (``OrtValue``), never as numpy. Polygraphy's own
argument parser and ONNX Runtime runner execute the generated command (TensorRT's half needs a
GPU). The CUDA tests skip with their reason where there is no GPU.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export.engine import ENGINE_INDEX, Profile, Range, profile_shapes
from export.engine_check import TOLERANCES, check_commands
from export.onnx_export import export_checkpoint
from export.parity import DEFAULT_INSPECTION, random_tiles
from inspector.artifacts.manifest import read_manifest
from inspector.backends.onnxruntime import OnnxRuntimeBackend, output_placement
from inspector.backends.tensorrt import plan_bindings
from inspector.errors import InspectorError
from inspector.prompting import build_prompt

TILE = 32
LAYERS = 4  # the tiny model's text layers
KV = [f"present_{kind}_{layer}" for layer in range(LAYERS) for kind in ("key", "value")]


def _cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def export_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("device-io") / "graphs"
    export_checkpoint(tiny_model_dir, TILE, out)
    return out


def test_a_verdict_binds_only_the_option_logits_to_the_host() -> None:
    placement = output_placement(["option_logits", *KV], ["option_logits"], "cuda")
    assert placement["option_logits"] == "cpu"
    assert {placement[name] for name in KV} == {"cuda"}  # the KV cache stays on the GPU


def test_asking_for_an_output_the_graph_lacks_is_an_error() -> None:
    with pytest.raises(ValueError, match="no output"):
        output_placement(["logits", *KV], ["option_logits"], "cpu")


def test_tensorrt_binds_kv_from_an_earlier_run_by_address_and_returns_it_on_the_device() -> None:
    inputs = ["inputs_embeds", "position_ids", "attention_mask", "deepstack_embeds",
              *[n.replace("present", "past") for n in KV]]  # fmt: skip
    past = [n.replace("present", "past") for n in KV]
    plan = plan_bindings(inputs, ["logits", *KV], ["logits"], past)
    assert {plan[n] for n in past} == {"device"}
    assert {plan[n] for n in ("inputs_embeds", "position_ids", "attention_mask")} == {"upload"}
    assert plan["logits"] == "host" and {plan[n] for n in KV} == {"device"}
    with pytest.raises(ValueError, match="no output"):
        plan_bindings(inputs, ["logits"], ["option_logits"], [])


def test_onnxruntime_keeps_the_kv_cache_in_its_own_buffers(export_dir: Path, tiny_model_dir: Path) -> None:
    import onnxruntime as ort

    from inspector.models import load_tokenizer

    backend = OnnxRuntimeBackend(export_dir, providers=["CPUExecutionProvider"])
    grid = backend.manifest.grid_thw
    visual = backend.encode(random_tiles(3, grid, seed=1), grid)
    prompt = build_prompt(load_tokenizer(str(tiny_model_dir)), DEFAULT_INSPECTION, visual.tokens_per_image)
    ids = np.tile(prompt.input_ids, (3, 1))
    logits, state = backend.prefill(ids, visual, prompt.option_ids)
    assert isinstance(logits, np.ndarray) and logits.shape == (3, len(prompt.option_ids))
    assert all(isinstance(value, ort.OrtValue) for value in state.present)  # never copied to numpy
    assert state.present[0].shape() == [3, backend.manifest.text["kv_heads"], prompt.length,
                                        backend.manifest.text["head_dim"]]  # fmt: skip
    # A subset of rows decodes as those rows do within the whole batch (gathered once, then bound).
    whole = backend.generate(state, [0, 1, 2], [], 6, prompt.stop_ids)
    assert backend.generate(state, [2, 0], [], 6, prompt.stop_ids) == [whole[2], whole[0]]


def _engine_index(export_dir: Path, engine_dir: Path) -> Path:
    """An engines.json as `inspector export engine` writes it (profiles of the tiny export; no engines needed)."""
    manifest = read_manifest(export_dir)
    profile = Profile.for_manifest(manifest, Range(1, 2, 4))
    engines = {}
    for graph in ("vision_bytes", "verdict", "decoder"):
        shapes = profile_shapes(graph, manifest.graphs[graph], profile)
        engines[graph] = {"file": f"{graph}.engine", "key": "k",
                          "profile": {n: [list(s) for s in v] for n, v in shapes.items()}}  # fmt: skip
    engine_dir.mkdir(parents=True, exist_ok=True)
    (engine_dir / ENGINE_INDEX).write_text(json.dumps({"format": "line-inspector-engines", "engines": engines}))
    (engine_dir / "timing.cache").write_bytes(b"")
    return engine_dir


def test_engine_check_runs_polygraphy_trt_against_onnxrt_on_each_engines_profile(export_dir: Path,
                                                                                 tmp_path: Path) -> None:  # fmt: skip
    checks = {c.graph: c.command for c in check_commands(export_dir, _engine_index(export_dir, tmp_path / "e"))}
    assert sorted(checks) == ["decoder", "verdict", "vision_bytes"]
    verdict = checks["verdict"]
    assert verdict[:3] == ["polygraphy", "run", str(export_dir / "verdict.onnx")]
    assert {"--trt", "--onnxrt", "--strongly-typed"} <= set(verdict)
    assert verdict[verdict.index("--load-timing-cache") + 1] == str(tmp_path / "e" / "timing.cache")
    shapes = verdict[verdict.index("--input-shapes") + 1 : verdict.index("--val-range")]
    assert "past_key_0:[2,1,0,16]" in shapes  # the prefill's opt shape: 2 tiles, an empty cache
    assert "attention_mask:[1,1]" in verdict and "option_ids:[32,57]" in verdict
    atol, rtol = TOLERANCES["float32"]
    assert verdict[verdict.index("--atol") + 1] == str(atol) and verdict[verdict.index("--rtol") + 1] == str(rtol)
    assert "patch_bytes:[0,255]" in checks["vision_bytes"]


def test_engine_check_without_engines_names_the_build_command(export_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InspectorError, match="no engines were built") as raised:
        check_commands(export_dir, tmp_path)
    assert "inspector export engine" in raised.value.hint


@pytest.mark.skipif(shutil.which("polygraphy") is None, reason="polygraphy is not installed (pip install polygraphy)")
def test_polygraphy_accepts_the_command_and_runs_its_onnxruntime_half(export_dir: Path, tmp_path: Path) -> None:
    """Polygraphy parses every flag (TensorRT's included) and runs the ONNX Runtime side on this CPU."""
    checks = check_commands(export_dir, _engine_index(export_dir, tmp_path / "e"))
    verdict = next(c.command for c in checks if c.graph == "verdict")
    cpu_only = [arg for arg in verdict if arg != "--trt"]
    done = subprocess.run(cpu_only, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "option_logits" in done.stdout + done.stderr


def test_export_check_engine_dry_run_prints_the_commands(export_dir: Path, tmp_path: Path) -> None:
    engine_dir = _engine_index(export_dir, tmp_path / "e")
    done = subprocess.run(
        [sys.executable, "-m", "inspector", "export", "check", "--onnx", str(export_dir), "--engine", str(engine_dir),
         "--dry-run"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("polygraphy run ") and "--onnxrt" in line for line in lines)


@pytest.mark.skipif(not _cuda_available(), reason="needs onnxruntime-gpu and an NVIDIA GPU (CUDA provider absent)")
def test_onnxruntime_cuda_keeps_the_kv_cache_on_the_gpu(export_dir: Path, tiny_model_dir: Path) -> None:
    from inspector.models import load_tokenizer

    backend = OnnxRuntimeBackend(export_dir, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    grid = backend.manifest.grid_thw
    visual = backend.encode(random_tiles(2, grid, seed=1), grid)
    prompt = build_prompt(load_tokenizer(str(tiny_model_dir)), DEFAULT_INSPECTION, visual.tokens_per_image)
    _, state = backend.prefill(np.tile(prompt.input_ids, (2, 1)), visual, prompt.option_ids)
    assert {value.device_name().lower() for value in state.present} == {"cuda"}


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="needs TensorRT and an NVIDIA GPU")
def test_tensorrt_keeps_the_kv_cache_on_the_gpu(export_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU (torch sees none)")
    from export.engine import build_engines
    from inspector.backends.tensorrt import TensorRTBackend, TensorRTConfig
    from inspector.models import load_tokenizer

    build_engines(export_dir, tmp_path, Range(1, 2, 4))
    backend = TensorRTBackend(
        TensorRTConfig(path=str(tiny_model_dir), engine_dir=tmp_path, onnx_dir=export_dir, device="cuda")
    )
    grid = backend.manifest.grid_thw
    visual = backend.encode(random_tiles(2, grid, seed=1), grid)
    prompt = build_prompt(load_tokenizer(str(tiny_model_dir)), DEFAULT_INSPECTION, visual.tokens_per_image)
    _, state = backend.prefill(np.tile(prompt.input_ids, (2, 1)), visual, prompt.option_ids)
    assert all(isinstance(v, torch.Tensor) and v.is_cuda for v in state.present)

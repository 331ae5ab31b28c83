"""TensorRT engines: the pure decisions (profiles, cache key, what to rebuild, the FP8 gate) here;
the build-and-run tests need TensorRT and an NVIDIA GPU and skip, saying so, where either is missing.

The profile tests read the manifest of a real export of the tiny model, so the symbolic
dimensions they fill are the exporter's own.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from export.engine import (
    ENGINE_GRAPHS,
    Device,
    EngineError,
    Profile,
    Range,
    check_fp8_device,
    engine_key,
    graph_sha256,
    parse_range,
    profile_shapes,
    stale_graphs,
)
from export.onnx_export import export_checkpoint
from inspector.artifacts.manifest import read_manifest
from inspector.backends.tensorrt import engine_problem

TILE = 32
H200 = Device("NVIDIA H200", (9, 0), "10.13.0")


def _has_gpu() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_tensorrt = pytest.mark.skipif(
    not (HAS_TENSORRT and _has_gpu()),
    reason="needs TensorRT and an NVIDIA GPU (pip install 'line-inspector[tensorrt]' on a GPU machine); "
    f"here: tensorrt {'installed' if HAS_TENSORRT else 'not installed'}, GPU {'yes' if _has_gpu() else 'none'}",
)


@pytest.fixture(scope="module")
def export_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("engine-export")
    export_checkpoint(tiny_model_dir, TILE, out)
    return out


@given(st.integers(1, 64), st.integers(0, 64), st.integers(0, 64))
def test_parse_range_accepts_ordered_triples_only(low: int, step1: int, step2: int) -> None:
    opt, high = low + step1, low + step1 + step2
    assert parse_range(f"{low}:{opt}:{high}") == Range(low, opt, high)
    if step1 > 0:
        with pytest.raises(EngineError):
            parse_range(f"{opt}:{low}:{high}")


@pytest.mark.parametrize("text", ["", "a:b:c", "0:1:2", "1:2", "1:2:3:4", "-1:2:3"])
def test_parse_range_rejects_malformed_text(text: str) -> None:
    with pytest.raises(EngineError, match="MIN:OPT:MAX"):
        parse_range(text)


def test_a_single_number_is_a_fixed_batch() -> None:
    assert parse_range("8") == Range(8, 8, 8)


def test_profiles_cover_every_input_of_every_graph(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    profile = Profile.for_manifest(manifest, Range(1, 8, 32))
    for graph in ENGINE_GRAPHS:
        spec = manifest.graphs[graph]
        shapes = profile_shapes(graph, spec, profile)
        assert set(shapes) == {t.name for t in spec.inputs}
        for low, opt, high in shapes.values():
            assert len(low) == len(opt) == len(high)
            assert all(a <= b <= c for a, b, c in zip(low, opt, high))


def test_profile_dimensions_follow_each_graph_role(export_dir: Path) -> None:
    manifest = read_manifest(export_dir)
    profile = Profile.for_manifest(manifest, Range(2, 8, 16))
    layers, kv, hd = manifest.text["layers"], manifest.text["kv_heads"], manifest.text["head_dim"]
    vision = profile_shapes("vision_bytes", manifest.graphs["vision_bytes"], profile)["patch_bytes"]
    patches = (TILE // 16) ** 2
    assert vision == ((2, patches, 768), (8, patches, 768), (16, patches, 768))
    verdict = profile_shapes("verdict", manifest.graphs["verdict"], profile)
    tokens = manifest.tokens_per_tile
    assert verdict["inputs_embeds"][0][:2] == (2, 1) and verdict["inputs_embeds"][2][1] >= tokens + 64
    assert all(verdict[f"past_key_{i}"][2] == (16, kv, 0, hd) for i in range(layers))  # prefill: empty cache
    lengths = [shape[1] for shape in verdict["inputs_embeds"]]
    assert verdict["attention_mask"] == tuple((b, n) for b, n in zip((2, 8, 16), lengths))  # total = prompt
    assert verdict["option_ids"][1] == (4,)
    decoder = profile_shapes("decoder", manifest.graphs["decoder"], profile)
    assert decoder["inputs_embeds"][2][1] == 1  # one token per step
    low, _, high = decoder["past_key_0"]
    assert low[2] == 1 and high[2] >= verdict["inputs_embeds"][2][1]  # the cache holds a whole prompt
    assert decoder["attention_mask"][2] == (16, high[2] + 1)


def test_engine_key_changes_with_gpu_tensorrt_graph_and_profile() -> None:
    shapes = {"x": ((1, 4), (8, 4), (32, 4))}
    key = engine_key(H200, "a" * 64, shapes)
    assert key == engine_key(Device("NVIDIA H200", (9, 0), "10.13.0"), "a" * 64, dict(shapes))
    others = [
        engine_key(Device("NVIDIA L4", (8, 9), "10.13.0"), "a" * 64, shapes),
        engine_key(Device("NVIDIA H200", (9, 1), "10.13.0"), "a" * 64, shapes),
        engine_key(Device("NVIDIA H200", (9, 0), "11.0.0"), "a" * 64, shapes),
        engine_key(H200, "b" * 64, shapes),
        engine_key(H200, "a" * 64, {"x": ((1, 4), (8, 4), (64, 4))}),
    ]
    assert len({key, *others}) == 6


def test_only_changed_or_missing_engines_rebuild() -> None:
    index = {"engines": {"vision": {"key": "k1", "file": "vision-k1.engine"},
                         "verdict": {"key": "k2", "file": "verdict-k2.engine"}}}  # fmt: skip
    present = {"vision-k1.engine", "verdict-k2.engine"}
    assert stale_graphs(index, {"vision": "k1", "verdict": "k2"}, present) == []
    assert stale_graphs(index, {"vision": "k1", "verdict": "k3"}, present) == ["verdict"]
    assert stale_graphs(index, {"vision": "k1", "verdict": "k2"}, {"verdict-k2.engine"}) == ["vision"]
    assert stale_graphs(index, {"vision": "k1", "decoder": "k4"}, present) == ["decoder"]
    assert stale_graphs({}, {"vision": "k1"}, set()) == ["vision"]


def test_graph_hash_covers_the_weights(export_dir: Path, tmp_path: Path) -> None:
    import shutil

    manifest = read_manifest(export_dir)
    copy = tmp_path / "copy"
    shutil.copytree(export_dir, copy)
    spec = manifest.graphs["verdict"]
    before = graph_sha256(copy, spec, manifest.external_data)
    assert before == graph_sha256(export_dir, spec, manifest.external_data)
    with (copy / manifest.external_data).open("r+b") as handle:  # one weight byte changes
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    assert graph_sha256(copy, spec, manifest.external_data) != before


@pytest.mark.parametrize(
    ("capability", "refused"), [((7, 5), True), ((8, 0), True), ((8, 7), True), ((8, 9), False), ((9, 0), False)]
)
def test_fp8_engines_need_compute_capability_8_9(capability: tuple[int, int], refused: bool) -> None:
    device = Device("GPU", capability, "10.13.0")
    if refused:
        with pytest.raises(EngineError, match="FP8 needs 8.9") as error:
            check_fp8_device("fp8", device)
        assert "float16" in error.value.hint
    else:
        check_fp8_device("fp8", device)
    check_fp8_device("float16", device)  # FP16 engines build anywhere


def test_engines_built_for_another_gpu_are_refused_with_the_rebuild_command() -> None:
    index = {"format": "line-inspector-engines", "device": {"gpu": "NVIDIA L4", "capability": [8, 9],
             "tensorrt": "10.13.0"}, "engines": {g: {} for g in ENGINE_GRAPHS}}  # fmt: skip
    same = {"gpu": "NVIDIA L4", "capability": [8, 9], "tensorrt": "10.13.0"}
    assert engine_problem(index, same, ENGINE_GRAPHS) is None
    assert "built for NVIDIA L4" in engine_problem(index, {**same, "gpu": "NVIDIA H200"}, ENGINE_GRAPHS)
    assert "TensorRT 10.13.0" in engine_problem(index, {**same, "tensorrt": "11.0.0"}, ENGINE_GRAPHS)
    assert "no decoder engine" in engine_problem({**index, "engines": {"vision": {}}}, same, ("vision", "decoder"))
    assert engine_problem({}, same, ENGINE_GRAPHS) == "it holds no line-inspector engine index"


@pytest.mark.skipif(HAS_TENSORRT and _has_gpu(), reason="TensorRT and a GPU are here: the build test runs instead")
def test_export_engine_names_what_to_install(export_dir: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "inspector", "export", "engine", "--onnx", str(export_dir), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert "line-inspector[tensorrt]" in run.stderr or "NVIDIA GPU" in run.stderr


@needs_tensorrt
def test_engines_build_once_and_rebuild_only_on_change(export_dir: Path, tmp_path: Path) -> None:
    from export.engine import ENGINE_INDEX, build_engines

    out = tmp_path / "engines"
    first = build_engines(export_dir, out, Range(1, 2, 4))
    assert sorted(first.built) == sorted(ENGINE_GRAPHS)
    second = build_engines(export_dir, out, Range(1, 2, 4))
    assert second.built == [] and sorted(second.reused) == sorted(ENGINE_GRAPHS)
    third = build_engines(export_dir, out, Range(1, 4, 8))  # another profile: everything rebuilds
    assert sorted(third.built) == sorted(ENGINE_GRAPHS)
    assert json.loads((out / ENGINE_INDEX).read_text())["device"]["gpu"]


@needs_tensorrt
def test_tensorrt_backend_matches_onnxruntime(export_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from export.engine import build_engines
    from export.parity import DEFAULT_INSPECTION, random_tiles, softmax
    from inspector.backends.onnxruntime import OnnxRuntimeBackend
    from inspector.backends.tensorrt import TensorRTBackend, TensorRTConfig
    from inspector.models import load_tokenizer
    from inspector.prompting import build_prompt

    build_engines(export_dir, tmp_path, Range(1, 2, 4))
    config = TensorRTConfig(path=str(tiny_model_dir), engine_dir=tmp_path, onnx_dir=export_dir, device="cuda")
    backends = [TensorRTBackend(config), OnnxRuntimeBackend(export_dir)]
    tokenizer = load_tokenizer(str(tiny_model_dir))
    grid = read_manifest(export_dir).grid_thw
    patches = random_tiles(2, grid)
    results = []
    for backend in backends:
        visual = backend.encode(patches, grid)
        prompt = build_prompt(tokenizer, DEFAULT_INSPECTION, visual.tokens_per_image)
        ids = np.broadcast_to(prompt.input_ids, (visual.batch, prompt.length))
        logits, state = backend.prefill(ids, visual, prompt.option_ids)
        results.append((softmax(logits), backend.generate(state, [0, 1], [], 8, prompt.stop_ids)))
    # float32 graphs, TF32 tactics allowed by TensorRT: 1e-3 on the probabilities.
    assert np.abs(results[0][0] - results[1][0]).max() < 1e-3

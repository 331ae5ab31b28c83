"""bench/gpu.py: the dry run (shapes, FLOPs, ceilings) on a CPU, and the GPU path's model and inputs on a tiny config.

The FLOP counts are checked against the figures worked out by hand for Qwen3-VL-4B at 512 px
(DESIGN.md: ViT ~0.78 TFLOP, prefill of ~300 tokens ~2.21 TFLOP, ~3.0 in all; an H200 at
989/1979 dense TFLOP/s gives <= ~331 tiles/s bf16 and ~525 with an FP8 language model),
within 1.5 % (the hand figures are rounded).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
pytestmark = pytest.mark.slow  # builds the 4B and 8B architectures on the meta device, ~10-20 s


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_gpu", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run() -> dict:
    run = subprocess.run([sys.executable, str(BENCH), "--dry-run"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1  # one JSON line
    return json.loads(lines[0])


def test_dry_run_counts_the_4b_flops(dry_run: dict) -> None:
    four = dry_run["models"]["4b"]
    assert dry_run["gpu"] == "not measured (dry run)"
    flops = four["tflop_per_tile"]
    assert flops["vision"] == pytest.approx(0.78, rel=0.015)
    assert flops["prefill"] == pytest.approx(2.21, rel=0.015)
    assert flops["total"] == pytest.approx(3.0, rel=0.015)
    assert four["params"]["text_non_embedding_b"] == pytest.approx(3.63, rel=0.01)
    assert four["ceiling_tiles_per_s"]["bf16"] == pytest.approx(331, rel=0.015)
    assert four["ceiling_tiles_per_s"]["fp8"] == pytest.approx(525, rel=0.015)


def test_dry_run_shapes_per_batch(dry_run: dict) -> None:
    assert dry_run["batches"] == [1, 8, 32]
    for size, hidden in (("4b", 2560), ("8b", 4096)):
        shapes = dry_run["models"][size]["shapes"]["32"]
        assert shapes["pixel_values"] == [32 * 1024, 1536]
        assert shapes["visual_embeds"] == [32, 256, hidden]
        assert shapes["deepstack"] == [3, 32, 256, hidden]
        assert shapes["input_ids"][1] == dry_run["models"][size]["prompt_tokens"] > 256
    assert dry_run["models"]["8b"]["tflop_per_tile"]["total"] > dry_run["models"]["4b"]["tflop_per_tile"]["total"]


def test_gpu_path_model_and_inputs_run_a_verdict_on_a_tiny_config() -> None:
    import torch

    from inspector.models import tiny_config

    bench = _bench()
    config = tiny_config()
    flops = bench.tile_flops(config)
    model = bench.random_model(config, "cpu")
    assert model.dtype == torch.bfloat16
    inputs = bench.verdict_inputs(config, 2, flops, "cpu")
    assert inputs["input_ids"].shape == (2, flops.prompt_tokens)
    assert int(inputs["mm_token_type_ids"].sum()) == 2 * flops.image_tokens
    with torch.inference_mode():
        logits = model(**inputs, logits_to_keep=1).logits
    assert logits.shape == (2, 1, config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_without_a_gpu_the_bench_says_so() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the real bench runs there")
    run = subprocess.run([sys.executable, str(BENCH), "--models", "4b"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "no CUDA GPU" in run.stderr and "--dry-run" in run.stderr and "Traceback" not in run.stderr

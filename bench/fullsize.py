"""Full-size Qwen3-VL (the real 4B and 8B configs, random weights) end to end on CPU, step by step.

    python bench/fullsize.py --work /big/fullsize [--steps torch,onnx,fp8,8b,lora] [--tiles N] [--keep]

Prints ONE JSON line with a section per step. Not run in CI: a step takes minutes to an hour
on 2 cores and up to ~20 GB of RAM (docs/fullsize.md gives each step's memory). Steps:

- ``torch``: a random 4B checkpoint (bf16, written tensor by tensor: ``inspector.models.fullsize``)
  loaded through ``load_model`` in float16; one 1280x720 frame at tile 512 (6 tiles, no overlap,
  no global view) -> verdict; seconds per tile, peak RSS.
- ``onnx``: float16 ONNX export -> onnxruntime verdict on the same frame; option probabilities
  vs torch (``FP16_PROBABILITY_TOL``).
- ``fp8``: ModelOpt calibration on the frame's first tiles, FP8 export with the streaming
  Q/DQ pass (peak RSS <= 16 GB is the goal) -> onnxruntime FP8 verdict; agreement and drift vs fp16.
- ``8b``: a random 8B checkpoint -> float16 export; peak RSS (goal <= 20 GB).
- ``lora``: 2 AdamW steps at batch 1 with the 4B base frozen in bf16 (peft LoRA r=16 on the
  language model), merged, saved, exported to float16 ONNX and loaded by onnxruntime.

Each phase runs in its own subprocess (``--phase``), so its peak RSS (``ru_maxrss`` from
``wait4``) is its own; results land in ``WORK/results/PHASE.json`` and a finished phase is
not rerun (``--redo`` reruns it). Before each heavy phase the free memory (MemAvailable) is
checked against what the phase needs; the bench waits for it (``--wait-memory``) and
otherwise records the phase as skipped with the reason. ``--tiles N`` judges only the
frame's first N tiles in every verdict phase (ONNX Runtime's float16 MatMul runs at ~15
GFLOP/s on this CPU, idle: ~200 s per 512-px tile); the comparisons are then on those
tiles, and the report says how many (``tiles``, ``tiles_compared``).

Random weights: every verdict here is meaningless about any part; the figures are about
memory, time and agreement between runtimes only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np

_common.use_checkout()

log = logging.getLogger("bench.fullsize")

TILE = 512
FRAME_SIZE = (1280, 720)
CALIBRATION_TILES = 2
# float16 vs float16 (torch's CPU kernels vs ONNX Runtime's, the same weights bit for bit): both
# round to 11-bit mantissas (unit roundoff 4.9e-4) at different points (fused ops, accumulation
# order), over 36 layers; a relative logit error of a few 1e-3 moves a 4-way softmax by well
# under 1e-2. A larger gap is a graph bug, not rounding.
FP16_PROBABILITY_TOL = 1e-2
STEPS = {
    "torch": ("build_4b", "torch"),
    "onnx": ("build_4b", "torch", "onnx_export", "onnx_verdict"),
    # The FP8 export first: its peak RSS is the figure that matters most, and needs no other phase.
    "fp8": ("build_4b", "fp8_export", "torch", "fp8_verdict", "onnx_export", "onnx_verdict"),
    "8b": ("build_8b", "export_8b"),
    "lora": ("build_4b", "lora_train", "lora_export"),
}
# GiB of free memory a phase needs before it starts (its measured or expected peak plus margin).
NEEDS_GIB = {"build_4b": 3, "build_8b": 3, "torch": 11, "onnx_export": 12.5, "onnx_verdict": 11, "fp8_export": 14,
             "fp8_verdict": 8, "export_8b": 21, "lora_train": 13, "lora_export": 12.5}  # fmt: skip
# Directories a phase leaves that no later phase needs (removed unless --keep).
PRUNE_AFTER = {"onnx_verdict": "onnx-fp16", "fp8_verdict": "onnx-fp8", "export_8b": "qwen3-vl-8b-onnx",
               "lora_export": "lora-merged"}  # fmt: skip


# -- shared pieces ---------------------------------------------------------------------------


def bench_frame() -> np.ndarray:
    """A deterministic 1280x720 BGR frame: grey texture with a dark scratch (the verdict means nothing)."""
    import cv2

    rng = np.random.default_rng(0)
    width, height = FRAME_SIZE
    frame = (rng.normal(150, 12, (height, width, 1)) + np.zeros((1, 1, 3))).clip(0, 255).astype(np.uint8)
    cv2.line(frame, (200, 150), (700, 420), (40, 40, 40), 3)
    return frame


def station(model_dir: Path, **model: Any) -> Any:
    config = _common.bench_station(model_dir, tile=TILE, device="cpu", batch_size=1)
    if model:
        from inspector.config import parse_model_config

        merged = {**config.model.model_dump(), **model}
        config = config.model_copy(update={"model": parse_model_config(merged, "bench/fullsize.py")})
    return config


def judge(config: Any, tiles: int | None) -> dict[str, Any]:
    """Build the station's Inspector, judge the frame (its first ``tiles`` tiles), time it."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from inspector.classify import StageTimes
    from inspector.frames import Frame
    from inspector.pipeline import build_inspector

    began = time.perf_counter()
    inspector = build_inspector(config)
    loaded_s = time.perf_counter() - began
    frame = Frame(bench_frame(), "bench-frame", 0, datetime.now(UTC))
    prepared = inspector.prepare(frame)
    if tiles is not None:
        prepared = replace(prepared, tiles=prepared.tiles[:tiles], pixel_values=prepared.pixel_values[:tiles])

    times = StageTimes()
    start = time.perf_counter()
    results = inspector.classifier.classify(prepared.pixel_values, prepared.grid, times)
    judged_s = time.perf_counter() - start
    verdict = inspector.conclude(prepared, results, times)
    count = len(results)
    return {
        "tiles": count,
        "load_s": loaded_s,
        "s_per_tile": judged_s / count,
        "vision_s_per_tile": times.vision_ms / 1000 / count,
        "verdict": verdict.verdict.value if hasattr(verdict.verdict, "value") else str(verdict.verdict),
        "probabilities": [r.probabilities for r in results],
        "random_weights": inspector.backend.info.random_weights,
    }


def compare(ours: list[dict[str, float]], reference: list[dict[str, float]]) -> dict[str, Any]:
    """Per-tile option probabilities vs a reference run on the same tiles."""
    count = min(len(ours), len(reference))
    a = np.array([[row[k] for k in sorted(row)] for row in ours[:count]])
    b = np.array([[row[k] for k in sorted(row)] for row in reference[:count]])
    return {
        "tiles_compared": count,
        "max_abs_probability_diff": float(np.abs(a - b).max()),
        "mean_abs_probability_diff": float(np.abs(a - b).mean()),
        "top_class_agreement": f"{int((a.argmax(1) == b.argmax(1)).sum())}/{count}",
    }


def result(work: Path, phase: str) -> dict[str, Any]:
    return json.loads((work / "results" / f"{phase}.json").read_text())


# -- phases (each in its own process) ------------------------------------------------------------


def architecture(size: str, mid: bool) -> Any:
    """The released config, or with ``--mid`` the same widths at 3 text and 3 vision layers (a quick dry run)."""
    from dataclasses import replace

    from inspector.models.fullsize import ARCHITECTURES

    spec = ARCHITECTURES[size]
    return replace(spec, text_layers=3, vision_depth=3, deepstack_indexes=(0, 1, 2)) if mid else spec


def phase_build(work: Path, args: argparse.Namespace, size: str) -> dict[str, Any]:
    from inspector.models.fullsize import write_random_checkpoint

    out = work / f"qwen3-vl-{size}"
    shutil.rmtree(out, ignore_errors=True)
    began = time.perf_counter()
    write_random_checkpoint(out, architecture(size, args.mid), dtype="bfloat16", seed=0)
    files = [p for p in out.iterdir() if p.suffix == ".safetensors"]
    return {"build_s": time.perf_counter() - began, "checkpoint_gib": sum(p.stat().st_size for p in files) / 1024**3,
            "dtype": "bfloat16", "shards": len(files)}  # fmt: skip


def phase_torch(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    # float16, the dtype of the ONNX export: the comparison is then of runtimes, not of dtypes.
    return judge(station(work / "qwen3-vl-4b", dtype="float16"), args.tiles)


def _export(model_dir: Path, out: Path) -> dict[str, Any]:
    from export.onnx_export import export_checkpoint

    shutil.rmtree(out, ignore_errors=True)
    began = time.perf_counter()
    export_checkpoint(model_dir, TILE, out, dtype="float16")
    sizes = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return {"export_s": time.perf_counter() - began, "export_gib": sizes / 1024**3}


def phase_onnx_export(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    return _export(work / "qwen3-vl-4b", work / "onnx-fp16")


def _ort_station(work: Path, onnx_dir: str) -> Any:
    return station(work / "qwen3-vl-4b", backend="onnxruntime", onnx_dir=str(work / onnx_dir))


def phase_onnx_verdict(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    return judge(_ort_station(work, "onnx-fp16"), args.tiles)


def phase_fp8_export(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    from export.onnx_export import export_model
    from export.quantize.calibration import CalibrationSet
    from export.quantize.fp8 import Fp8Export, calibrate
    from inspector.artifacts.identity import identify_checkpoint
    from inspector.models import load_tokenizer
    from inspector.tiling import TilePlanner
    from inspector.vision import patch_bytes

    model_dir, out = work / "qwen3-vl-4b", work / "onnx-fp8"
    shutil.rmtree(out, ignore_errors=True)
    config = station(model_dir)
    planner = TilePlanner.from_config(config.tiling)
    _, pixels = planner.crop(bench_frame())
    patches, grid = patch_bytes(pixels[:CALIBRATION_TILES], min_pixels=0)
    calibration = CalibrationSet(np.ascontiguousarray(patches), grid, "bench/fullsize.py frame", 1, len(pixels), 0)
    began = time.perf_counter()
    model = Qwen3VLForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float16).eval()
    loaded = time.perf_counter()
    layers = calibrate(model, load_tokenizer(str(model_dir)), config.inspection, calibration, batch=1)
    calibrated = time.perf_counter()
    identity = identify_checkpoint(model_dir)
    hooks = Fp8Export(calibration, layers)
    export_model(model, identity, TILE, out, quantization=hooks)
    done = time.perf_counter()
    sizes = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return {"load_s": loaded - began, "calibration_s": calibrated - loaded, "calibration_tiles": calibration.tiles,
            "export_s": done - calibrated, "quantized_layers": len(layers), "graphs": hooks.graphs,
            "export_gib": sizes / 1024**3}  # fmt: skip


def phase_fp8_verdict(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    return judge(_ort_station(work, "onnx-fp8"), args.tiles)


def comparisons(phases: dict[str, Any]) -> dict[str, Any]:
    """onnxruntime float16 vs torch float16, FP8 vs float16 (and vs torch): per-tile probabilities, verdicts.

    Computed from the phases' results, so the phases may run in any order (the FP8 export first).
    """
    pairs = {"onnx_fp16_vs_torch_fp16": ("onnx_verdict", "torch"), "fp8_vs_onnx_fp16": ("fp8_verdict", "onnx_verdict"),
             "fp8_vs_torch_fp16": ("fp8_verdict", "torch")}  # fmt: skip
    out: dict[str, Any] = {}
    for name, (ours, reference) in pairs.items():
        a, b = phases.get(ours, {}), phases.get(reference, {})
        if "probabilities" not in a or "probabilities" not in b:
            continue
        versus = compare(a["probabilities"], b["probabilities"])
        versus["verdict_agrees"] = a["verdict"] == b["verdict"]
        versus["s_per_tile_ratio"] = a["s_per_tile"] / b["s_per_tile"]
        if name == "onnx_fp16_vs_torch_fp16":
            versus["tolerance"] = FP16_PROBABILITY_TOL
            versus["within_tolerance"] = versus["max_abs_probability_diff"] <= FP16_PROBABILITY_TOL
        out[name] = versus
    return out


def phase_export_8b(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    return _export(work / "qwen3-vl-8b", work / "qwen3-vl-8b-onnx")


def phase_lora_train(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from inspector.models import load_model
    from inspector.training.lora import add_lora, merge
    from inspector.training.objective import TrainingPrompt, option_logits, verdict_loss

    model_dir, out = work / "qwen3-vl-4b", work / "lora-merged"
    shutil.rmtree(out, ignore_errors=True)
    loaded = load_model(str(model_dir), dtype="bfloat16")  # the base stays bf16 and frozen
    config = station(model_dir)
    model = add_lora(loaded.model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    prompt = TrainingPrompt.build(loaded.tokenizer, config.inspection, TILE)
    frame = bench_frame()
    tile_rgb = np.ascontiguousarray(frame[150:662, 200:712, ::-1])[None]  # the scratch's tile, RGB
    labels = torch.tensor([1])
    steps = []
    model.train()
    for _ in range(2):
        start = time.perf_counter()
        loss = verdict_loss(option_logits(model, prompt, tile_rgb), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps.append({"loss": float(loss), "s": time.perf_counter() - start})
    merged = merge(model)
    merged.save_pretrained(out)
    for companion in model_dir.iterdir():  # tokenizer, preprocessor config, random-weights marker
        if companion.is_file() and not companion.name.startswith(("model", "config.json")):
            shutil.copy2(companion, out / companion.name)
    return {"steps": steps, "trainable_params": sum(p.numel() for p in trainable),
            "base_dtype": "bfloat16", "batch": 1}  # fmt: skip


def phase_lora_export(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from inspector.backends.onnxruntime import OnnxRuntimeBackend
    from inspector.models import load_tokenizer

    merged, out = work / "lora-merged", work / "lora-onnx"
    figures = _export(merged, out)
    start = time.perf_counter()
    backend = OnnxRuntimeBackend(out, providers=["CPUExecutionProvider"], model_dir=merged)
    load_tokenizer(str(merged))
    figures["onnxruntime_load_s"] = time.perf_counter() - start
    figures["loaded_graphs"] = sorted(backend._sessions)
    del backend
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return figures


PHASES = {
    "build_4b": lambda w, a: phase_build(w, a, "4b"),
    "build_8b": lambda w, a: phase_build(w, a, "8b"),
    "torch": phase_torch,
    "onnx_export": phase_onnx_export,
    "onnx_verdict": phase_onnx_verdict,
    "fp8_export": phase_fp8_export,
    "fp8_verdict": phase_fp8_verdict,
    "export_8b": phase_export_8b,
    "lora_train": phase_lora_train,
    "lora_export": phase_lora_export,
}


# -- the driver ------------------------------------------------------------------------------------


class AnonPeak:
    """Samples this process's anonymous RSS (RssAnon) every 0.2 s; its maximum is what the phase really held.

    ``ru_maxrss`` also counts the clean pages of memory-mapped safetensors that from_pretrained
    touched: they are reclaimable page cache, yet can add up to the checkpoint's size to the peak.
    """

    def __init__(self) -> None:
        import threading

        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.2):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]))

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak / 1024**2


def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def wait_for_memory(phase: str, wait_s: float) -> str | None:
    """None once MemAvailable covers the phase's need, else why it cannot start."""
    need = NEEDS_GIB.get(phase, 2)
    deadline = time.monotonic() + wait_s
    while (free := mem_available_gib()) < need:
        if time.monotonic() > deadline:
            return f"needs {need} GiB free, only {free:.1f} GiB available after waiting {wait_s:.0f} s"
        log.info("%s needs %.1f GiB free, %.1f GiB available: waiting", phase, need, free)
        time.sleep(30)
    return None


def run_phase(work: Path, phase: str, args: argparse.Namespace) -> dict[str, Any]:
    """The phase in a child process; its own peak RSS from wait4."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--work", str(work), "--phase", phase]
    if args.tiles is not None:
        command += ["--tiles", str(args.tiles)]
    if args.keep:
        command.append("--keep")
    if args.mid:
        command.append("--mid")
    log.info("phase %s (log: %s)", phase, logs / f"{phase}.log")
    began = time.perf_counter()
    with (logs / f"{phase}.log").open("w") as stream:
        child = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    figures: dict[str, Any] = {"wall_s": time.perf_counter() - began, "peak_rss_gib": usage.ru_maxrss / 1024**2}
    if child.returncode != 0:
        figures["error"] = f"exit {child.returncode}: " + (logs / f"{phase}.log").read_text()[-400:]
        return figures
    figures.update(result(work, phase))
    (work / "results" / f"{phase}.json").write_text(json.dumps(figures))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="checkpoints, graphs, logs and results (~40 GB)")
    parser.add_argument("--steps", default="torch,onnx,fp8,8b,lora", help="comma-separated: " + ",".join(STEPS))
    parser.add_argument("--tiles", type=int, help="judge only the frame's first N tiles (every verdict phase)")
    parser.add_argument("--keep", action="store_true", help="keep exported graphs (default: removed once used)")
    parser.add_argument("--redo", action="store_true", help="rerun phases that already have results")
    parser.add_argument("--wait-memory", type=float, default=900, help="seconds to wait for free memory per phase")
    parser.add_argument("--mid", action="store_true", help="dry run: real widths, 3 text and 3 vision layers")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)  # the child's entry point
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    work = args.work.resolve()
    (work / "results").mkdir(parents=True, exist_ok=True)

    if args.phase:  # child: do the work, write the result; the parent adds time and peak RSS
        sampler = AnonPeak()
        figures = PHASES[args.phase](work, args)
        figures["peak_anon_gib"] = sampler.stop()
        (work / "results" / f"{args.phase}.json").write_text(json.dumps(figures))
        return 0

    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    report: dict[str, Any] = {
        "bench": "fullsize", "random_weights": True, "mid_size_dry_run": args.mid,
        "tile": TILE, "frame": list(FRAME_SIZE), "tiles_limit": args.tiles, "phases": {},
    }  # fmt: skip
    for step in steps:
        for phase in STEPS[step]:
            if phase in report["phases"]:
                continue
            done = work / "results" / f"{phase}.json"
            if done.is_file() and not args.redo and "peak_rss_gib" in json.loads(done.read_text()):
                report["phases"][phase] = json.loads(done.read_text())
                continue
            why = wait_for_memory(phase, args.wait_memory)
            if why is not None:
                report["phases"][phase] = {"skipped": why}
                break  # later phases of this step depend on this one
            figures = run_phase(work, phase, args)
            report["phases"][phase] = figures
            log.info("%s: %s", phase, json.dumps({k: v for k, v in figures.items() if k != "probabilities"})[:400])
            if "error" in figures:
                break
            if phase in PRUNE_AFTER and not args.keep:
                shutil.rmtree(work / PRUNE_AFTER[phase], ignore_errors=True)
    report["comparisons"] = comparisons(report["phases"])
    for figures in report["phases"].values():
        figures.pop("probabilities", None)
    _common.emit(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`inspector export onnx|engine|check`: a Qwen3-VL checkpoint -> ONNX graphs (float or FP8) -> TensorRT engines.

The command lives with the exporter, not in inspector/commands: ``inspector`` never imports
``export`` (import-linter checks it). The CLI finds it through the ``inspector.commands``
entry point that pyproject.toml declares.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

ONNX_EPILOG = """\
examples:
  inspector export onnx --model models/tiny --tile 512 --out models/tiny-onnx-512
  inspector export onnx --model Qwen3-VL-4B-Instruct --tile 512 --dtype float16 --out engines/4b-512
  inspector export onnx --model models/demo --tile 256 --out models/demo-fp8 \\
      --precision fp8 --calib demo/clip.mp4 --calib-tiles 256 --config configs/demo.yaml

The vision graph is baked for one tile size: use the station config's tiling.tile.
Writes vision.onnx and vision_bytes.onnx (float pixel values / the pipeline's uint8 patch
bytes), verdict.onnx (answer-option logits), decoder.onnx (KV-cache decoding),
weights.onnx.data (all their weights, each stored once), embed_tokens.npy and manifest.json.
Set model.backend: onnxruntime and model.onnx_dir: OUT to run on them.

--precision fp8 (needs the fp8 extra: pip install 'line-inspector[fp8]'): NVIDIA ModelOpt
calibrates FP8 E4M3 scales for the language model's linear layers (weights and input
activations) on tiles that the station's tiler and preprocessing cut from --calib (the
line's footage: a video, an image folder or glob; or a labelled data set), with the prompt
of --config's inspection section. The vision tower stays in --dtype unless
--quantize-vision; patch embedding, mergers, norms and lm_head always do. The graphs hold
standard QuantizeLinear/DequantizeLinear in float8e4m3fn (opset 19): ONNX Runtime (CPU
too) and TensorRT load the same files. The manifest records the calibration fingerprint,
the tile count and the quantised layers. Measure what FP8 costs before shipping it:
replay the same footage on both exports and run `inspector compare`.
"""

ENGINE_EPILOG = """\
examples:
  inspector export engine --onnx models/demo-fp8 --out engines/demo-fp8
  inspector export engine --onnx engines/4b-512 --out engines/4b-512-trt --batch 1:8:32

Builds TensorRT engines for the GPU of this machine from an `inspector export onnx`
directory: vision (float and patch-byte forms), verdict (prefill) and decoder, as strongly
typed networks (FP8 Q/DQ graphs run FP8 tactics; float16 graphs run float16), with one
optimisation profile each (--batch tiles per call; prompt and KV lengths from the tile
size) and a timing cache kept in --out. engines.json records each engine's key (GPU name,
compute capability, TensorRT version, graph sha256, profile): running the command again
rebuilds only what changed, and nothing when nothing did. FP8 needs compute capability
>= 8.9 (Ada, Hopper, Blackwell, Jetson Thor); elsewhere export float16 graphs.
Needs an NVIDIA GPU and TensorRT: pip install 'line-inspector[tensorrt]'.
Then set model.backend: tensorrt, model.engine_dir: OUT, model.onnx_dir: the export.
"""

CHECK_EPILOG = """\
example:
  inspector export check --model models/tiny --onnx models/tiny-onnx-512 --json

Exit status 0 when the graphs match the reference within the tolerance of their dtype
(float32: 1e-4 and identical greedy tokens), 1 otherwise.

On a GPU box, --engine ENGINE_DIR compares each TensorRT engine's graph with ONNX Runtime
instead (no --model needed): one `polygraphy run GRAPH --trt --onnxrt --strongly-typed` per
engine, with the profile recorded in engines.json and the engine directory's timing cache;
tolerances by precision (float16 1e-2, fp8 1e-1 on the median error), or --atol/--rtol.
--dry-run prints the Polygraphy commands without running them (works anywhere):
  inspector export check --onnx engines/4b-512 --engine engines/4b-512-trt --dry-run
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (float or FP8), check it against transformers, build TensorRT engines",
        description="Deployment graphs: ONNX export (for ONNX Runtime and TensorRT) and parity checks.",
    )
    actions = parser.add_subparsers(dest="export_command", metavar="ACTION")

    onnx = actions.add_parser(
        "onnx",
        help="export the vision, verdict and decoder graphs for one tile size",
        description="Export a Qwen3-VL checkpoint directory (4B/8B, Instruct/Thinking) to ONNX graphs.",
        epilog=ONNX_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    onnx.add_argument(
        "--model", required=True, type=Path, help="Qwen3-VL checkpoint directory (config.json + *.safetensors)"
    )
    onnx.add_argument("--tile", required=True, type=int, help="tile side in px, a multiple of 32 (tiling.tile)")
    onnx.add_argument("--out", required=True, type=Path, help="output directory for the graphs and manifest.json")
    onnx.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                      help="weights and compute dtype of the graphs (default: float32)")  # fmt: skip
    onnx.add_argument("--opset", type=int, default=19, help="ONNX opset, 19 or 20 (default: 19)")
    onnx.add_argument("--force", action="store_true", help="replace graphs of another model in --out")
    fp8 = onnx.add_argument_group("FP8 (--precision fp8)")
    fp8.add_argument("--precision", default="float", choices=("float", "fp8"),
                     help="float: all weights in --dtype (default); fp8: language-model linears in FP8")  # fmt: skip
    fp8.add_argument("--calib", metavar="SOURCE_OR_DATASET", action="append",
                     help="the line's footage (video, folder, glob) or a labelled data set; repeatable")  # fmt: skip
    fp8.add_argument("--calib-tiles", type=int, default=256, metavar="N",
                     help="calibration tiles drawn uniformly over --calib (default: 256)")  # fmt: skip
    fp8.add_argument("--calib-seed", type=int, default=0, help="seed of the tile draw (default: 0)")
    fp8.add_argument("--quantize-vision", action="store_true",
                     help="quantise the vision blocks' linears too (default: vision stays in --dtype)")  # fmt: skip
    fp8.add_argument("--config", type=Path,
                     help="station YAML whose inspection (prompt) and tiling cut the calibration tiles")  # fmt: skip
    onnx.set_defaults(func=run)

    engine = actions.add_parser(
        "engine",
        help="build TensorRT engines for this GPU from exported graphs (cached: unchanged builds are skipped)",
        description="Build the TensorRT engines of an ONNX export (needs an NVIDIA GPU and TensorRT).",
        epilog=ENGINE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    engine.add_argument("--onnx", required=True, type=Path, help="the export directory (holds manifest.json)")
    engine.add_argument("--out", required=True, type=Path, help="engine directory (engines + timing cache)")
    engine.add_argument("--batch", default="1:8:32", metavar="MIN:OPT:MAX",
                        help="tiles per call the engines serve (default: 1:8:32)")  # fmt: skip
    engine.add_argument("--force", action="store_true", help="rebuild every engine even if its key is unchanged")
    engine.add_argument("--json", action="store_true", help="print the build report as one JSON line")
    engine.set_defaults(func=run)

    check = actions.add_parser(
        "check",
        help="compare the exported graphs with the transformers reference",
        description="Run the torch and onnxruntime backends on the same tiles and prompt; report the differences.",
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--model", type=Path, help="the checkpoint directory the graphs came from (not with --engine)")
    check.add_argument("--onnx", required=True, type=Path, help="the export directory (holds manifest.json)")
    check.add_argument("--config", type=Path, help="station YAML whose inspection section gives the prompt")
    check.add_argument("--batch", type=int, default=2, help="tiles per batch (default: 2)")
    check.add_argument("--tokens", type=int, default=32, help="greedy explanation tokens to compare (default: 32)")
    check.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    engines = check.add_argument_group("TensorRT engines vs ONNX Runtime (Polygraphy, on a GPU box)")
    engines.add_argument("--engine", type=Path, metavar="ENGINE_DIR",
                         help="compare the engines built there (export engine) with ONNX Runtime")  # fmt: skip
    engines.add_argument("--atol", type=float, help="absolute tolerance (default: by precision)")
    engines.add_argument("--rtol", type=float, help="relative tolerance (default: by precision)")
    engines.add_argument("--dry-run", action="store_true", help="print the polygraphy commands, run nothing")
    check.set_defaults(func=run)
    parser.set_defaults(func=run, export_parser=parser)


def _show_progress() -> None:
    # A 4B export runs for minutes: show its stages even without -v.
    for name in ("export",):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)


def _fp8_calibration(args: argparse.Namespace) -> Any:
    """The ``quantize`` hook of ``export_checkpoint``: cut the calibration tiles now (bad footage fails
    before the model loads), calibrate once the model is loaded."""
    from export.onnx_export import check_tile
    from export.parity import DEFAULT_INSPECTION
    from export.quantize.calibration import calibration_tiles
    from export.quantize.fp8 import Fp8Export, calibrate, require_modelopt
    from inspector.config import TilingConfig, load_config
    from inspector.errors import ConfigError
    from inspector.models import load_tokenizer

    if not args.calib:
        raise ConfigError(
            "--precision fp8 needs calibration data",
            "pass --calib with the line's footage (a video or image folder) or a labelled data set",
        )
    check_tile(args.tile)
    require_modelopt()  # ModelOpt missing: say so before any work
    inspection, tiling = DEFAULT_INSPECTION, TilingConfig(tile=args.tile)
    if args.config is not None:
        station = load_config(args.config)
        inspection, tiling = station.inspection, station.tiling
        if tiling.tile != args.tile:
            raise ConfigError(
                f"--tile {args.tile} differs from tiling.tile {tiling.tile} in {args.config}",
                f"export with --tile {tiling.tile}: calibration must see the station's tiles",
            )
    calibration = calibration_tiles(args.calib, tiling, args.calib_tiles, seed=args.calib_seed,
                                    classes=inspection.classes)  # fmt: skip
    tokenizer = load_tokenizer(str(args.model))

    def quantize(model: Any) -> Fp8Export:
        layers = calibrate(model, tokenizer, inspection, calibration, quantize_vision=args.quantize_vision)
        return Fp8Export(calibration, layers, quantize_vision=args.quantize_vision)

    return quantize


def _check_engines(args: argparse.Namespace) -> int:
    """``export check --engine``: Polygraphy's TensorRT vs ONNX Runtime comparison per engine."""
    import shlex

    from export.engine_check import check_commands, run_checks

    checks = check_commands(args.onnx, args.engine, atol=args.atol, rtol=args.rtol)
    if args.dry_run:
        for check in checks:
            print(shlex.join(check.command))
        return 0
    results = run_checks(checks)
    if args.json:
        print(json.dumps({"engines": results, "passed": all(results.values())}))
    else:
        for graph, passed in results.items():
            print(f"{graph:24} {'PASS' if passed else 'FAIL'}")
    return 0 if all(results.values()) else 1


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "export_command", None)
    if command == "onnx":
        from export.onnx_export import export_checkpoint

        _show_progress()
        quantize = _fp8_calibration(args) if args.precision == "fp8" else None
        if quantize is None and (args.calib or args.quantize_vision):
            from inspector.errors import ConfigError

            raise ConfigError("--calib and --quantize-vision only apply to --precision fp8",
                              "add --precision fp8, or drop them")  # fmt: skip
        manifest = export_checkpoint(
            args.model, args.tile, args.out, dtype=args.dtype, opset=args.opset, force=args.force, quantize=quantize
        )
        print(f"wrote {', '.join(spec.file for spec in manifest.graphs.values())} and manifest.json to {args.out}")
        return 0
    if command == "engine":
        from export.engine import build_engines, parse_range

        _show_progress()
        report = build_engines(args.onnx, args.out, parse_range(args.batch), force=args.force)
        if args.json:
            print(json.dumps(report.to_json()))
        else:
            print(f"built {', '.join(report.built) or 'nothing'}; up to date: {', '.join(report.reused) or 'none'} "
                  f"({report.device['gpu']}, TensorRT {report.device['tensorrt']}) in {args.out}")  # fmt: skip
        return 0
    if command == "check" and args.engine is not None:
        return _check_engines(args)
    if command == "check":
        from export.parity import DEFAULT_INSPECTION, check_parity
        from inspector.artifacts.manifest import read_manifest
        from inspector.errors import ConfigError

        if args.model is None:
            raise ConfigError(
                "export check needs --model (the checkpoint the graphs came from)",
                "pass --model DIR, or --engine ENGINE_DIR to compare TensorRT engines instead",
            )

        if read_manifest(args.onnx).effective_precision == "fp8":
            raise ConfigError(
                f"{args.onnx} holds FP8 graphs: they differ from the float reference by design, so the float "
                "parity tolerance does not apply",
                "measure what FP8 costs on the line's footage: `inspector replay` with the float and the FP8 "
                "export, then `inspector compare float.jsonl fp8.jsonl` (docs/deployment.md: FP8 and TensorRT)",
            )

        inspection = DEFAULT_INSPECTION
        if args.config is not None:
            from inspector.config import load_config

            inspection = load_config(args.config).inspection
        if not args.json:
            _show_progress()
        report = check_parity(args.model, args.onnx, inspection=inspection, batch=args.batch, tokens=args.tokens)
        if args.json:
            print(json.dumps(report.to_json()))
        else:
            for key, value in report.to_json().items():
                print(f"{key:24} {value}")
        return 0 if report.passed else 1
    args.export_parser.print_help(sys.stderr)
    return 2

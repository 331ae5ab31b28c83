"""`inspector compare REFERENCE.jsonl CANDIDATE.jsonl`: is the candidate engine safe to ship?"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from inspector.compare import VERDICTS, compare_runs

DESCRIPTION = """\
Compare two replays of the same footage, frame by frame: typically the reference model
(torch, bf16) against a deployment engine (ONNX Runtime, TensorRT FP8).

Reports verdict agreement, the reference->candidate verdict transitions, frames where the
candidate MISSES a defect the reference found (NG -> OK), frames judged NG with other
classes, the largest per-tile class-probability difference, and the latency ratio.
Exit code 1 when the candidate fails the gate (--max-missed, --min-agreement), so a
release pipeline can block an engine that is not safe to ship.
"""

EXAMPLE = """\
example:
  inspector replay clip.mp4 -c station.yaml --out ref.jsonl
  inspector replay clip.mp4 -c station.yaml --backend onnxruntime --onnx graphs/ --out onnx.jsonl
  inspector compare ref.jsonl onnx.jsonl --max-missed 0 --min-agreement 0.99
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare two engines' verdicts on the same footage (safe to ship?)",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("reference", type=Path, help="verdicts (JSONL) of the trusted engine")
    parser.add_argument("candidate", type=Path, help="verdicts (JSONL) of the engine under test")
    parser.add_argument("--max-missed", type=int, default=0, help="allowed NG->OK frames (default 0)")
    parser.add_argument("--min-agreement", type=float, default=0.98, help="required verdict agreement (default 0.98)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of tables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = compare_runs(args.reference, args.candidate)
    passed = result.passes(max_missed=args.max_missed, min_agreement=args.min_agreement)
    if args.json:
        print(result.to_json())
        return 0 if passed else 1
    console = Console()
    matrix = Table(title="verdicts: reference (rows) -> candidate (columns)")
    matrix.add_column("")
    for verdict in VERDICTS:
        matrix.add_column(verdict, justify="right")
    for row in VERDICTS:
        matrix.add_row(row, *(str(result.transitions.get(f"{row}->{col}", 0)) for col in VERDICTS))
    console.print(matrix)
    summary = Table(show_header=False)
    summary.add_row("frames compared", str(result.frames_compared))
    if result.frames_only_in_one:
        summary.add_row("frames in one file only", str(result.frames_only_in_one))
    summary.add_row("verdict agreement", f"{result.agreement:.4f}")
    missed = ", ".join(map(str, result.missed_defects[:20])) or "none"
    summary.add_row("missed defects (NG->OK frames)", missed)
    summary.add_row("NG with other classes", str(result.class_mismatch_frames))
    if result.max_prob_diff is not None:
        summary.add_row(
            "class probability diff max / mean", f"{result.max_prob_diff:.2e} / {result.mean_prob_diff:.2e}"
        )
    if result.latency_ratio is not None:
        summary.add_row("latency candidate / reference", f"{result.latency_ratio:.3f}")
    summary.add_row("gate", "[green]PASS[/]" if passed else "[red]FAIL[/]")
    console.print(summary)
    return 0 if passed else 1

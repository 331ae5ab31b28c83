"""`inspector report RESULTS.jsonl --out report.html`: a replay as one self-contained HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write an HTML report of a replay (counts, latency, metrics, NG frames)",
        description=(
            "Write a self-contained HTML report of verdicts written by `inspector replay`: verdict counts,\n"
            "latency, defects by class, metrics against labels (--labels) and every frame that is not OK,\n"
            "with its defects, boxes and explanations."
        ),
        epilog="example:\n  inspector report results.jsonl --labels demo/labels.json --out report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results", type=Path, help="verdicts (JSONL)")
    parser.add_argument("--labels", type=Path, help="labels.json to score against")
    parser.add_argument("--out", "-o", type=Path, default=Path("report.html"), help="default report.html")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspector.demo_data import frame_labels
    from inspector.report import render_report

    labels = frame_labels(args.labels) if args.labels else None
    args.out.write_text(render_report(args.results, labels), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0

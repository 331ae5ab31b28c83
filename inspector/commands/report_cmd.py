"""`inspector report RESULTS.jsonl --out report.html`: verdicts as one self-contained HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write an HTML report of verdicts (pictures of what went wrong, curves, metrics)",
        description=(
            "Write a self-contained HTML report of verdicts written by `inspector replay` or\n"
            "`inspector evaluate --save-verdicts`: counts, latency, defects by class; with --labels\n"
            "the metrics of `inspector evaluate`, ROC and precision-recall curves, and pictures of the\n"
            "missed defects, false rejects and UNCERTAIN frames (labelled boxes green, predicted red,\n"
            "beside a per-class probability heatmap). Without labels, the NG frames as pictures.\n"
            "Frames are re-read from the sources the verdicts name.\n\n"
            "--labels takes any data set `inspector evaluate --data` takes; give --config (and --map)\n"
            "when its classes need mapping onto the station's."
        ),
        epilog=(
            "examples:\n"
            "  inspector report results.jsonl --labels demo/labels.json --out report.html\n"
            "  inspector report eval.jsonl --labels coco/ --config station.yaml --map Scratch=scratch"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results", type=Path, help="verdicts (JSONL)")
    parser.add_argument("--labels", type=Path, action="append", help="labelled data set to score against (repeatable)")
    parser.add_argument("--config", "-c", help="station YAML (classes for --labels); default: the verdicts' classes")
    parser.add_argument("--map", action="append", metavar="SRC=DST", help="map a label class onto a station class")
    parser.add_argument("--out", "-o", type=Path, default=Path("report.html"), help="default report.html")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspector.commands.evaluate_cmd import _write_text
    from inspector.evaluation import match_verdicts, read_verdicts
    from inspector.evaluation.report import classes_of_verdicts, render_report

    verdicts = read_verdicts(args.results)
    predictions = classes = None
    if args.labels:
        from inspector.config import load_config
        from inspector.datasets import load_datasets, parse_class_map

        station = load_config(args.config) if args.config else classes_of_verdicts(verdicts)
        dataset = load_datasets(args.labels, station, parse_class_map(args.map))
        classes = list(dataset.classes)
        predictions = match_verdicts(dataset, verdicts, where=str(args.results))
    page = render_report(verdicts, title=str(args.results), predictions=predictions, classes=classes)
    _write_text(args.out, page)
    print(f"wrote {args.out}")
    return 0

"""`inspector evaluate --config F --model M --data D`: a model measured against labelled data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from inspector.errors import InspectorError

if TYPE_CHECKING:
    from rich.console import Console

    from inspector.config import StationFile
    from inspector.datasets import Dataset
    from inspector.evaluation import Evaluation, Prediction

DESCRIPTION = """\
Run the station's Inspector over every labelled frame (or image) of the data set(s) and
measure it with scikit-learn: NG-vs-OK AUROC and average precision at tile and frame
level, frame precision and recall, the escape rate (defective frames judged OK), the
overkill rate (good frames judged NG), the UNCERTAIN rate, per-class precision / recall /
F1 and confusion matrices, and the share of labelled boxes hit by a defect of their class.

--data takes footage + labels.json (`inspector demo-data` writes one), a COCO detection
JSON (CVAT, Label Studio, Roboflow; or a folder holding one) or a folder of class folders
(ok/, <class>/ ...). Dataset class names must be the station's, or be mapped with --map.
Tiles are labelled by one rule (docs/data.md); ambiguous tiles are left out.

--verdicts reads verdicts written before (by --save-verdicts or `inspector replay`)
instead of running the model: they carry every tile's probabilities, which are judged
again under --config's thresholds and uncertain band (so a calibrated config can be
measured without the model). Tiling and model are those of the run that wrote them.
"""

EXAMPLES = """\
examples:
  inspector evaluate --config configs/demo.yaml --model models/demo --data demo/heldout
  inspector evaluate --config station.yaml --data coco/_annotations.coco.json --map Scratch=scratch --json
  inspector evaluate --config station.yaml --data labelled/ --save-verdicts eval.jsonl --html eval.html
  inspector evaluate --config station.yaml --data labelled/ --verdicts eval.jsonl --json
"""


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The options evaluate and calibrate share: station, model overrides, data, verdicts."""
    from inspector.backends.registry import backend_names

    parser.add_argument("--config", "-c", required=True, help="station YAML (see configs/)")
    parser.add_argument("--model", help="checkpoint directory or hub id; overrides model.path")
    parser.add_argument("--backend", choices=backend_names(), help="overrides model.backend")
    parser.add_argument("--onnx", dest="onnx_dir", help="exported graphs directory; overrides model.onnx_dir")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N; overrides model.device")
    parser.add_argument(
        "--data", action="append", required=True, metavar="D", help="labelled data set (repeat for several)"
    )
    parser.add_argument(
        "--map", action="append", metavar="SRC=DST", help="map a data set class onto a station class (repeatable)"
    )
    parser.add_argument("--verdicts", type=Path, help="read these verdicts (JSONL) instead of running the model")
    parser.add_argument("--save-verdicts", type=Path, help="also write the verdicts (JSONL) for calibrate / report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="measure a model against labelled data (escape / overkill rates, AUROC, per class)",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON line of the headline figures")
    parser.add_argument("--html", type=Path, metavar="REPORT", help="also write the HTML report here")
    parser.set_defaults(func=run)


def load_station_and_data(args: argparse.Namespace) -> tuple[StationFile, Dataset]:
    from inspector.config import load_config
    from inspector.datasets import load_datasets, parse_class_map
    from inspector.runtime import Overrides

    overrides = Overrides(model=args.model, backend=args.backend, onnx_dir=args.onnx_dir, device=args.device)
    config = overrides.apply(load_config(args.config))
    dataset = load_datasets(args.data, config, parse_class_map(args.map))
    return config, dataset


def predictions_for(
    args: argparse.Namespace, config: StationFile, dataset: Dataset, console: Console
) -> list[Prediction]:
    """Verdicts for every labelled frame: read from --verdicts, or judged now (then --save-verdicts)."""
    from inspector.commands.progress import progress_bar
    from inspector.evaluation import match_verdicts, read_verdicts, run_inspector, write_verdicts
    from inspector.pipeline import load_inspector

    if args.verdicts:
        from inspector.evaluation.calibrate import reaggregate

        predictions = match_verdicts(dataset, read_verdicts(args.verdicts), where=str(args.verdicts))
        if len(predictions) < len(dataset):
            console.print(f"[yellow]note:[/] {len(dataset) - len(predictions)} labelled frame(s) have no verdict")
        return reaggregate(predictions, config.inspection)
    console.print(f"loading model [bold]{config.model.path}[/] ({config.model.backend}) ...")
    inspector = load_inspector(config, warn=lambda text: console.print(f"[bold yellow]warning:[/] {text}"))
    with progress_bar(console, disable=args.no_progress) as progress:
        task = progress.add_task("judging", total=len(dataset))
        predictions = run_inspector(dataset, inspector, lambda _: progress.advance(task))
    if args.save_verdicts:
        write_verdicts(args.save_verdicts, [p.verdict for p in predictions])
        console.print(f"verdicts written to {args.save_verdicts}")
    return predictions


def format_figure(value: float | None) -> str:
    """A rate or score to 3 places; n/a where undefined."""
    return "n/a" if value is None else f"{value:.3f}"


def print_evaluation(console: Console, evaluation: Evaluation, title: str, *, demo: bool) -> None:
    from rich.table import Table

    from inspector.evaluation import SUMMARY_KEYS

    c = evaluation.counts
    table = Table(title=title, show_header=False)
    table.add_row("frames (defective / good)", f"{c.frames} ({c.defective} / {c.good})")
    table.add_row("tiles labelled (ambiguous, left out)", f"{evaluation.labelled_tiles} ({evaluation.ambiguous_tiles})")
    for key in SUMMARY_KEYS:
        table.add_row(key.replace("_", " "), format_figure(getattr(evaluation, key)))
    table.add_row(
        "tile / frame average precision",
        f"{format_figure(evaluation.tile_average_precision)} / {format_figure(evaluation.frame_average_precision)}",
    )
    table.add_row(
        "TP / FP / TN / FN / UNCERTAIN",
        f"{c.true_positive} / {c.false_positive} / {c.true_negative} / {c.false_negative} / {c.uncertain}",
    )
    if demo:
        table.add_row("[yellow]note", "[yellow]random or demo model: these figures say nothing about real parts")
    console.print(table)
    per_class = Table(title="per class, tile level")
    for column in ("class", "precision", "recall", "F1", "tiles"):
        per_class.add_column(column)
    for name, row in evaluation.per_class.items():
        per_class.add_row(
            name,
            format_figure(row["precision"]),
            format_figure(row["recall"]),
            format_figure(row["f1"]),
            str(row["support"]),
        )
    console.print(per_class)


def is_demo(predictions: list[Prediction]) -> bool:
    from inspector.evaluation.report import demo_warning

    return demo_warning([p.verdict for p in predictions]) is not None


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    evaluate_and_report(args, Console(stderr=True))
    return 0


def evaluate_and_report(args: argparse.Namespace, console: Console) -> Evaluation:
    """What `inspector evaluate` does (the figures, --html, then the table or --json); the figures back."""
    from inspector.evaluation import evaluate
    from inspector.evaluation.report import render_report

    if args.verdicts and args.save_verdicts:
        raise InspectorError("--verdicts and --save-verdicts together would copy a file", "pass one of them")
    config, dataset = load_station_and_data(args)
    predictions = predictions_for(args, config, dataset, console)
    classes = config.inspection.classes
    evaluation = evaluate(predictions, classes)
    if args.html:
        page = render_report(
            [p.verdict for p in predictions],
            title=f"evaluation on {dataset.source}",
            predictions=predictions,
            classes=classes,
        )
        _write_text(args.html, page)
        console.print(f"report written to {args.html}")
    if args.json:
        print(json.dumps(evaluation.summary()))
    else:
        print_evaluation(console, evaluation, f"evaluation on {dataset.source}", demo=is_demo(predictions))
    return evaluation


def _write_text(path: Path, text: str) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)

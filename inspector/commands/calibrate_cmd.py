"""`inspector calibrate --config F --data D --max-escape R`: thresholds for an escape bound, lowest overkill."""

from __future__ import annotations

import argparse
from pathlib import Path

from inspector.commands.evaluate_cmd import add_data_arguments, is_demo, load_station_and_data, predictions_for

DESCRIPTION = """\
Choose each defect class's threshold and the uncertain band so that at most --max-escape of
the defective frames are judged OK, with the fewest good frames judged NG (overkill), and
at most --max-uncertain of all frames UNCERTAIN. Calibrate on data the model was NOT
trained on. --holdout keeps that share of the data (whole clips or images, by --seed)
aside and reports how the chosen thresholds do on it: the figure to trust.

Prints the operating point; with --out, writes the station YAML with the new thresholds
and band (same content otherwise; the original file's comments are not kept).
"""

EXAMPLES = """\
examples:
  inspector calibrate --config configs/demo.yaml --model models/demo --data demo/heldout --max-escape 0.05
  inspector calibrate --config station.yaml --data labelled/ --verdicts eval.jsonl --max-escape 0.01 \\
      --max-uncertain 0.05 --out station.calibrated.yaml
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="choose per-class thresholds for a maximum escape rate at the lowest overkill",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_arguments(parser)
    parser.add_argument("--max-escape", type=float, required=True, metavar="R", help="e.g. 0.01: at most 1 %% escapes")
    parser.add_argument(
        "--max-uncertain", type=float, default=0.1, metavar="U", help="share of frames allowed UNCERTAIN (default 0.1)"
    )
    parser.add_argument(
        "--holdout", type=float, default=0.3, help="share kept aside to report on (default 0.3; 0: none)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the holdout split (default 0)")
    parser.add_argument("--out", type=Path, help="write the calibrated station YAML here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from inspector.commands.evaluate_cmd import print_evaluation
    from inspector.datasets import DatasetError, split_dataset
    from inspector.evaluation import evaluate
    from inspector.evaluation.calibrate import calibrate, reaggregate, write_station_yaml

    console = Console(stderr=True)
    config, dataset = load_station_and_data(args)
    predictions = predictions_for(args, config, dataset, console)
    classes = config.inspection.classes
    chosen_on, held = predictions, []
    if args.holdout > 0:
        try:
            _, held_set = split_dataset(dataset, args.holdout, args.seed)
        except DatasetError:
            _, held_set = split_dataset(dataset, args.holdout, args.seed, by="image")
            console.print("[yellow]note:[/] one clip only: held out by frame (neighbouring frames look alike)")
        held_keys = {item.key for item in held_set.images}
        chosen_on = [p for p in predictions if p.item.key not in held_keys]
        held = [p for p in predictions if p.item.key in held_keys]
    result = calibrate(
        chosen_on, config.inspection, classes, max_escape=args.max_escape, max_uncertain=args.max_uncertain
    )
    table = Table(title=f"operating point (max escape {args.max_escape}, max UNCERTAIN {args.max_uncertain})")
    for column in ("class", "old threshold", "new threshold"):
        table.add_column(column)
    for name, rule in config.inspection.defects.items():
        table.add_row(name, f"{rule.threshold:g}", f"{result.thresholds[name]:g}")
    table.add_row("uncertain band", f"{config.inspection.uncertain_band:g}", f"{result.uncertain_band:g}")
    console.print(table)
    demo = is_demo(predictions)
    print_evaluation(console, result.calibrated, f"on the {len(chosen_on)} frames calibrated on", demo=demo)
    if held:
        held_eval = evaluate(reaggregate(held, result.inspection), classes)
        print_evaluation(console, held_eval, f"on the {len(held)} held-out frames", demo=demo)
    c = result.calibrated.counts
    print(
        f"escape rate {_fmt(c.escape_rate)} (bound {args.max_escape}), overkill rate {_fmt(c.overkill_rate)}, "
        f"UNCERTAIN rate {_fmt(c.uncertain_rate)} on {c.frames} calibration frames"
    )
    if args.out:
        write_station_yaml(Path(args.config), result, args.out)
        console.print(f"calibrated station written to {args.out} (comments of the original are not kept)")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"

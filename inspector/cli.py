"""`inspector` command line: dispatches to inspector/commands/*, turns InspectorError into a clear message."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from inspector.errors import InspectorError
from inspector.version import __version__

# Modules under inspector.commands, in the order `inspector --help` lists them.
COMMAND_MODULES = (
    "demo_cmd",
    "replay",
    "compare_cmd",
    "report_cmd",
    "train_cmd",
    "evaluate_cmd",
    "calibrate_cmd",
    "watch",
    "demo_data",
    "tiles",
    "config_cmd",
    "model_cmd",
    "schema_cmd",
)
# Commands other packages add (``export`` adds `inspector export`): entry points, so that the
# CLI never imports them by name and the layers stay one-way.
PLUGIN_GROUP = "inspector.commands"

EPILOG = """\
first run, offline: the whole main job in one command (a tiny model of the real architecture,
trained on synthetic demo footage, calibrated, then measured on a held-out clip):
  inspector demo                                    # writes ./demo-run, ends with the figures and a report

the same steps by hand:
  inspector model tiny models/tiny --preset demo    # RANDOM weights: its verdicts mean nothing
  inspector demo-data demo                          # demo clip, training clips, a held-out clip
  inspector train --config configs/demo.yaml --data demo/train --out models/demo   # a DEMO model
  inspector replay demo/heldout/clip.mp4 --config configs/demo.yaml --model models/demo \\
      --labels demo/heldout/labels.json --out results.jsonl
  inspector report results.jsonl --labels demo/heldout/labels.json --out report.html

every command has --help with examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inspector",
        description="Line inspector: tiled visual inspection of production-line frames with Qwen3-VL.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"inspector.commands.{name}").register(subparsers)
    for entry in sorted(metadata.entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        entry.load()(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose == 0:
        # OpenCV/FFmpeg print their own warnings to stderr; our errors already name the problem.
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InspectorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `inspector schema | head` closes the pipe early; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""`inspector demo-data DIR`: write a small labelled clip with synthetic defects."""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inspector.demo_data import CLASSES, DemoClip, write_demo_set

DESCRIPTION = """\
Write a small labelled demo clip, offline, from texture photographs bundled with
scikit-image (gravel, brick), moving sideways like a conveyor, with synthetic defects
(scratch, spot, crack, missing_piece) drawn at known places on about half the frames.

Writes:
  DIR/clip.mp4     mp4v video, default 24 frames of 1280x720 at 8 fps
  DIR/labels.json  per frame: OK or NG and each defect's class and bbox [x0, y0, x1, y1)
                   in frame pixels (x1, y1 exclusive)
  DIR/train/clip-NN/{clip.mp4,labels.json}
                   --train-clips training clips (default 16; 0 for none): seeds S+1..,
                   on the surfaces gravel, brick and moon in turn
  DIR/heldout/{clip.mp4,labels.json}
                   a held-out clip to measure a trained model on: seed S+1000 on grass,
                   a seed and a surface no training clip has
  DIR/calibration/{clip.mp4,labels.json}
                   the clip `inspector calibrate` sets thresholds on: seed S+2000 on the
                   held-out surface, neither training nor held-out (--calibration-frames,
                   default 48; 0 for none), so the held-out figures stay honest

The same --seed always gives the same clips and labels.
"""

EXAMPLES = """\
examples:
  inspector demo-data demo
  inspector demo-data demo --frames 48 --size 1920x1080 --seed 3 --train-clips 0
  inspector train --config configs/demo.yaml --data demo/train --out models/demo
"""


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 1280x720")
    width, height = int(match[1]), int(match[2])
    if width % 2 or height % 2 or min(width, height) < 64 or max(width, height) > 4096:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be even, between 64 and 4096")
    return width, height


def _whole_number(minimum: int, words: str) -> Callable[[str], int]:
    """An argparse type: an int of at least ``minimum`` (``words`` says so in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {words}, got {value}")
        return value

    return parse


_positive_int = _whole_number(1, "at least 1")
_seed = _whole_number(0, "0 or more")


def _fps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 240:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 240, got {text}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo-data",
        help="write a small labelled clip with synthetic defects (offline)",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dir", type=Path, metavar="DIR", help="output folder (created; clip.mp4 and labels.json are replaced)"
    )
    parser.add_argument("--frames", type=_positive_int, default=24, metavar="N", help="number of frames (default 24)")
    parser.add_argument("--seed", type=_seed, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument(
        "--size",
        type=_size,
        default=(1280, 720),
        metavar="WxH",
        help="frame size in pixels, even sides (default 1280x720)",
    )
    parser.add_argument("--fps", type=_fps, default=8.0, metavar="F", help="recorded frame rate (default 8)")
    parser.add_argument(
        "--train-clips", type=_seed, default=16, metavar="N", help="training clips under DIR/train (default 16)"
    )
    parser.add_argument(
        "--train-frames", type=_positive_int, default=24, metavar="N", help="frames per training clip (default 24)"
    )
    parser.add_argument(
        "--heldout-frames", type=_positive_int, default=48, metavar="N", help="frames of DIR/heldout (default 48)"
    )
    parser.add_argument(
        "--calibration-frames", type=_seed, default=48, metavar="N",
        help="frames of DIR/calibration (default 48; 0 for none)",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    written = write_demo_set(
        args.dir,
        frames=args.frames,
        size=args.size,
        fps=args.fps,
        seed=args.seed,
        train_clips=args.train_clips,
        train_frames=args.train_frames,
        heldout_frames=args.heldout_frames,
        calibration_frames=args.calibration_frames,
    )
    console = Console()
    _print_clip(console, written.clip)
    if written.train:
        frames = sum(len(c.labels["frames"]) for c in written.train)
        defects = sum(len(f["defects"]) for c in written.train for f in c.labels["frames"])
        surfaces = sorted({c.labels["surface"] for c in written.train})
        console.print(
            f"wrote [bold]{args.dir / 'train'}[/]: {len(written.train)} training clips, {frames} frames, "
            f"{defects} defects, surfaces {', '.join(surfaces)}"
        )
    if written.heldout is not None:
        console.print("held-out clip (a seed and a surface not in training):")
        _print_clip(console, written.heldout)
    if written.calibration is not None:
        console.print("calibration clip (its own seed: thresholds are set here, never on the held-out clip):")
        _print_clip(console, written.calibration)
    return 0


def _print_clip(console: Any, clip: DemoClip) -> None:
    from rich.table import Table

    labels = clip.labels
    frames = labels["frames"]
    ng = sum(1 for f in frames if f["label"] == "NG")
    per_class = Counter(d["class"] for f in frames for d in f["defects"])
    megabytes = clip.video.stat().st_size / 1e6
    console.print(
        f"wrote [bold]{clip.video}[/] ({len(frames)} frames, {labels['width']}x{labels['height']} "
        f"at {labels['fps']:g} fps, {megabytes:.1f} MB, surface {labels['surface']})"
    )
    console.print(f"wrote [bold]{clip.labels_path}[/] ({len(frames) - ng} OK, {ng} NG)")
    table = Table("defect class", "count", title="defects drawn")
    for name in CLASSES:
        table.add_row(name, str(per_class.get(name, 0)))
    console.print(table)

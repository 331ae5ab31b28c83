"""`inspector replay SOURCE... --config FILE`: recorded footage -> verdicts (JSONL), progress, summary, metrics."""

from __future__ import annotations

import argparse
import logging
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console

from inspector.backends.registry import backend_names
from inspector.commands import replay_ray as cluster
from inspector.commands.explanations import print_explanations
from inspector.commands.progress import progress_bar
from inspector.commands.replay_summary import VERDICT_FIELDS, print_metrics, print_summary, verdict_counts
from inspector.config import load_config
from inspector.replay import ReplaySummary, label_metrics
from inspector.runtime import ErrorPolicy, Overrides, build_sinks, mqtt_settings
from inspector.sinks.jsonl import read_outcomes

log = logging.getLogger(__name__)

DESCRIPTION = """\
Replay recorded footage through the inspection pipeline and write one verdict per frame.

SOURCE is a video file, an image folder or a glob ('parts/*.png'). Verdicts are appended
to --out as JSON lines (schema: `inspector schema`); frames already in --out are skipped,
so an interrupted replay resumes where it stopped. With --labels (the labels.json that
`inspector demo-data` writes, or your own in that format) the summary adds precision and
recall of NG against the labels.

A frame that cannot be inspected (the model raised) still gets a verdict: UNCERTAIN, with
the error in its `error` field. The summary lists such frames and the exit status is 1
when there were any (0 otherwise, 2 for bad input); --fail-fast stops at the first one.
"""

EXAMPLES = """\
examples:
  inspector replay demo/clip.mp4 --config configs/demo.yaml --out results.jsonl --labels demo/labels.json
  inspector replay 'recordings/*.mp4' --config configs/line-example.yaml --model /models/Qwen3-VL-4B-Instruct
  inspector replay demo/clip.mp4 --config configs/demo.yaml --publish mqtt://127.0.0.1:1883
  inspector replay demo/clip.mp4 --config configs/demo.yaml --onnx exports/tiny-512 --fail-fast
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="judge recorded footage offline and write verdicts as JSON lines",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="video file, image folder or glob")
    parser.add_argument("--config", "-c", required=True, help="station YAML (see configs/)")
    parser.add_argument("--model", help="checkpoint directory or hub id; overrides model.path")
    parser.add_argument("--backend", choices=backend_names(), help="overrides model.backend")
    parser.add_argument(
        "--onnx", dest="onnx_dir", help="exported graphs directory; overrides model.onnx_dir (implies onnxruntime)"
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N; overrides model.device")
    parser.add_argument("--out", "-o", type=Path, help="JSONL output (default: sinks.jsonl.path, else results.jsonl)")
    parser.add_argument("--labels", type=Path, help="labels.json to score verdicts against")
    parser.add_argument("--publish", metavar="URL", help="also publish verdicts: mqtt://[user[:pass]@]host[:port]")
    parser.add_argument("--limit", type=int, help="stop after this many frames per source")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first frame that cannot be inspected")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    cluster.add_arguments(parser)
    parser.set_defaults(func=run)


def _output_path(args: argparse.Namespace, config) -> Path:
    if args.out:
        return args.out
    if config.sinks.jsonl:
        return config.sinks.jsonl.path
    return Path("results.jsonl")


def run(args: argparse.Namespace) -> int:
    # The pipeline pulls in OpenCV and torch: imported here so `inspector --help` stays instant.
    from inspector.demo_data import frame_labels
    from inspector.pipeline import load_inspector
    from inspector.sources import open_source

    console = Console(stderr=True)
    overrides = Overrides(model=args.model, backend=args.backend, onnx_dir=args.onnx_dir, device=args.device)
    config = overrides.apply(load_config(args.config))
    labels = frame_labels(args.labels) if args.labels else None
    if args.ray is not None:
        return cluster.run(args, config, labels, console)
    out_path = _output_path(args, config)

    policy = ErrorPolicy(fail_fast=args.fail_fast)
    with ExitStack() as stack:
        # Open (and so validate) every source before the model loads: bad input fails in a second.
        sources = [stack.enter_context(open_source(uri)) for uri in args.sources]
        done = set(read_outcomes(out_path))
        console.print(f"loading model [bold]{config.model.path}[/] ({config.model.backend}) ...")
        inspector = load_inspector(config, warn=lambda text: console.print(f"[bold yellow]warning:[/] {text}"))
        publish = mqtt_settings(config, args.publish, from_config=False)
        sinks = build_sinks(config, inspector, jsonl=out_path, mqtt=publish)
        stack.callback(sinks.close)
        summary = ReplaySummary()
        for source in sources:
            _replay_one(source, inspector, sinks.sinks, done, summary, policy, args, console)
            if summary.stopped_at is not None:
                break
        summary.skipped_corrupt = sum(s.stats.frames_skipped_corrupt for s in sources)

    print_summary(console, summary, out_path)
    print_explanations(console, summary.explained, summary.explained_total, out_path)
    if labels is not None:
        outcomes = read_outcomes(out_path)
        source_id = sources[0].source_id if len(sources) == 1 else None
        print_metrics(console, label_metrics(outcomes, labels, source_id), summary.model_warning is not None)
    if summary.failed:
        console.print(
            f"[bold red]{summary.failed} frame(s) could not be inspected[/] (UNCERTAIN verdicts carrying the error"
            + ("; stopped at the first, --fail-fast)" if summary.stopped_at else ")")
        )
        return 1
    return 0


def _replay_one(source, inspector, sinks, done, summary: ReplaySummary, policy, args, console: Console) -> None:
    from inspector.replay import replay_frames

    total = getattr(source, "frame_count", None)
    if args.limit:
        total = min(total, args.limit) if total else args.limit
    frames = _limited(source, args.limit)
    with progress_bar(console, disable=args.no_progress, fields=VERDICT_FIELDS) as progress:
        task = progress.add_task(Path(str(source.source_id)).name[:40], total=total, verdicts="")

        def advance(frame, verdict) -> None:
            progress.update(task, advance=1, verdicts=verdict_counts(summary))

        replay_frames(frames, inspector, sinks, done=done, summary=summary, on_frame=advance, policy=policy)


def _limited(source, limit: int | None):
    for count, frame in enumerate(source):
        if limit is not None and count >= limit:
            return
        yield frame

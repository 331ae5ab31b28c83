"""`inspector replay ... --ray [ADDRESS]`: the command-line side of a cluster replay (flags, progress, summary)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from inspector.config import StationFile
from inspector.errors import InspectorError

log = logging.getLogger(__name__)

LOCAL = "local"  # `--ray` with no address

DEFAULT_OUT = Path("results")

HELP = """\
Sources are spread over Ray workers, one Inspector per GPU (or per
--ray-cpus-per-worker CPUs); long files are cut into frame ranges of --ray-span-frames.
--out is then a FOLDER with one JSONL per source, named <file name>.<8 hex>.jsonl (the hex:
sha1 of the source as given, so two clip.mp4 from different folders stay apart); lines are
in the order verdicts came back, the key is (source.id, source.frame_index). A rerun skips
frames already written. Every node must read the model and the footage at the same paths.
"""

EXAMPLES = """\
  inspector replay demo/*.mp4 --config configs/demo.yaml --ray --out results/
  inspector replay /nfs/footage/*.mp4 --config line.yaml --ray 10.0.0.5:6379 --out /nfs/replays/week48
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster (Ray)", HELP + "examples:\n" + EXAMPLES)
    group.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help="replay on Ray: a cluster's HOST:6379 (or 'auto'), or a local Ray when no address is given",
    )
    group.add_argument(
        "--ray-workers", type=int, metavar="N", help="inspector workers (default: one per GPU, else per CPU share)"
    )
    group.add_argument(
        "--ray-cpus-per-worker", type=float, default=1.0, metavar="N", help="CPUs each worker holds (default 1)"
    )
    group.add_argument(
        "--ray-span-frames",
        type=int,
        default=256,
        metavar="N",
        help="frames of a file a worker takes at a time (default 256)",
    )
    group.add_argument(
        "--ray-frames-in-flight", type=int, default=8, metavar="N", help="frames queued per worker, at most (default 8)"
    )


def options_from(args: argparse.Namespace) -> Any:
    from inspector.cluster.driver import ClusterOptions

    return ClusterOptions(
        address=None if args.ray == LOCAL else args.ray,
        workers=args.ray_workers,
        cpus_per_worker=args.ray_cpus_per_worker,
        span_frames=args.ray_span_frames,
        frames_in_flight=args.ray_frames_in_flight,
    )


def out_dir(args: argparse.Namespace) -> Path:
    out = args.out or DEFAULT_OUT
    if out.suffix == ".jsonl" or out.is_file():
        raise InspectorError(
            f"with --ray, --out is a folder (one JSONL per source), not the file {out}",
            f"pass a folder, e.g. --out {out.with_suffix('')}/",
        )
    return out


def run(args: argparse.Namespace, config: StationFile, labels: dict[int, str] | None, console: Console) -> int:
    """Replay ``args.sources`` on Ray; print the summary and metrics a local replay prints. Exit status like it."""
    from inspector.cluster.driver import replay_on_ray
    from inspector.commands.progress import progress_bar
    from inspector.commands.replay_summary import VERDICT_FIELDS, print_metrics, print_summary, verdict_counts
    from inspector.replay import label_metrics
    from inspector.sinks.jsonl import read_outcomes

    for flag in ("limit", "fail_fast"):
        if getattr(args, flag, None):
            raise InspectorError(
                f"--{flag.replace('_', '-')} does not apply to --ray", "drop it, or replay without --ray"
            )
    options = options_from(args)
    out = out_dir(args)
    where = "a local Ray" if options.address is None else f"the Ray cluster at {options.address}"
    console.print(f"replaying {len(args.sources)} source(s) on {where}; model [bold]{config.model.path}[/] ...")

    with progress_bar(console, disable=args.no_progress, fields=VERDICT_FIELDS) as progress:
        task = progress.add_task("cluster", total=None, verdicts="")
        result = replay_on_ray(
            args.sources,
            config,
            out,
            options,
            extra_sinks=publish_sinks(args.publish, config),
            on_planned=lambda total: progress.update(task, total=total),
            warn=lambda text: console.print(f"[bold yellow]warning:[/] {text}"),
            on_verdicts=lambda count, summary: progress.update(task, advance=count, verdicts=verdict_counts(summary)),
        )

    summary = result.summary
    print_summary(console, summary, out)
    _print_outputs(console, result)
    if labels is not None and result.outputs:
        outcomes: dict[tuple[str, int], str] = {}
        for path in result.outputs.values():
            outcomes.update(read_outcomes(path))
        source_id = next(iter(result.outputs)) if len(result.outputs) == 1 else None
        print_metrics(console, label_metrics(outcomes, labels, source_id), summary.model_warning is not None)
    if result.failed or summary.failed:
        if summary.failed:
            console.print(
                f"[bold red]{summary.failed} frame(s) could not be inspected[/] (UNCERTAIN verdicts carrying the error)"
            )
        return 1
    return 0


def publish_sinks(url: str | None, config: StationFile):
    """The MQTT sink, created on the driver (it owns the durable outbox), with the workers' birth description."""
    if not url:
        return None
    from inspector.runtime import mqtt_settings

    settings = mqtt_settings(config, url, from_config=False)

    def build(description: dict[str, Any]) -> list[Any]:
        from inspector.mqtt import MqttSink

        return [MqttSink(settings, config.station, birth=description)]

    return build


def _print_outputs(console: Console, result: Any) -> None:
    table = Table(title="sources", show_header=True)
    table.add_column("source")
    table.add_column("verdicts written to / problem")
    for source_id, path in result.outputs.items():
        table.add_row(_short(source_id), str(path))
    for uri, problem in result.failed.items():
        table.add_row(f"[red]{_short(uri)}", f"[red]{problem}"[:300])
    per_worker: dict[int, int] = {}
    for (worker, _), frames in result.spread.items():
        per_worker[worker] = per_worker.get(worker, 0) + frames
    shares = ", ".join(f"#{worker}: {frames}" for worker, frames in sorted(per_worker.items()))
    table.caption = (
        f"{result.workers} worker(s)"
        + (f" (frames judged {shares})" if shares else "")
        + (
            f"; {result.duplicates_dropped} verdict(s) of retried calls dropped (already written)"
            if result.duplicates_dropped
            else ""
        )
    )
    console.print(table)


def _short(source: str, width: int = 48) -> str:
    """The source as given, its start cut when long: the end (folder and file name) tells sources apart."""
    return source if len(source) <= width else "…" + source[-(width - 1) :]

"""What a replay prints when it ends (local and on Ray alike): the summary and the figures against labels."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from inspector.errors import InspectorError
from inspector.replay import ReplaySummary

if TYPE_CHECKING:
    from inspector.evaluation.metrics import OutcomeCounts

_LISTED_FAILURES = 5  # failed frames named in the summary; every one is in the JSONL

VERDICT_FIELDS = "{task.fields[verdicts]}"


def verdict_counts(summary: ReplaySummary) -> str:
    """``NG 3 OK 40``: the verdicts so far, for the progress bar."""
    return " ".join(f"{k} {v}" for k, v in sorted(summary.verdicts.items()))


def print_summary(console: Console, summary: ReplaySummary, out_path: Path) -> None:
    """The replay summary table: frames, verdicts, failures, latency, where the verdicts went."""
    table = Table(title="replay summary", show_header=False)
    table.add_row("frames judged", str(summary.frames))
    if summary.skipped_done:
        table.add_row("already in output (skipped)", str(summary.skipped_done))
    if summary.skipped_corrupt:
        table.add_row("corrupt frames skipped", str(summary.skipped_corrupt))
    for verdict in ("OK", "NG", "UNCERTAIN"):
        table.add_row(verdict, str(summary.verdicts.get(verdict, 0)))
    if summary.failed:
        table.add_row("[red]could not be inspected", f"[red]{summary.failed} (UNCERTAIN, with the error)")
        for failure in summary.failures[:_LISTED_FAILURES]:
            table.add_row(f"  frame {failure.frame_index}", f"{Path(failure.source_id).name}: {failure.error}"[:160])
        if summary.failed > _LISTED_FAILURES:
            table.add_row("", f"... and {summary.failed - _LISTED_FAILURES} more (their verdicts carry the error)")
    if summary.stopped_at is not None:
        table.add_row("[red]stopped", "[red]at the first failure (--fail-fast)")
    table.add_row("latency mean / p95", f"{summary.latency_mean_ms:.1f} ms / {summary.latency_p95_ms:.1f} ms")
    table.add_row("verdicts written to", str(out_path))
    if summary.model_warning:
        table.add_row("[yellow]model", f"[yellow]{summary.model_warning}")
    console.print(table)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def print_metrics(console: Console, metrics: OutcomeCounts, toy_model: bool) -> None:
    """Precision, recall, escape and overkill rates against the labels (a random/demo model's say nothing)."""
    if metrics.frames == 0:
        raise InspectorError("no judged frame has a label", "check that --labels belongs to this footage")
    table = Table(title="against labels (NG = positive)", show_header=False)
    table.add_row("labelled frames", f"{metrics.frames} ({metrics.defective} defective, {metrics.good} good)")
    table.add_row(
        "TP / FP / TN / FN",
        f"{metrics.true_positive} / {metrics.false_positive} / {metrics.true_negative} / {metrics.false_negative}",
    )
    table.add_row("UNCERTAIN", str(metrics.uncertain))
    table.add_row("precision / recall", f"{_fmt(metrics.precision)} / {_fmt(metrics.recall)}")
    table.add_row("escape rate (defective judged OK)", _fmt(metrics.escape_rate))
    table.add_row("overkill rate (good judged NG)", _fmt(metrics.overkill_rate))
    table.add_row("accuracy (decided frames)", _fmt(metrics.accuracy))
    if toy_model:
        table.add_row("[yellow]note", "[yellow]random or demo model: these figures say nothing about real parts")
    console.print(table)

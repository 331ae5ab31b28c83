"""One progress bar for long commands (replay, cluster replay, evaluate, train), so they look alike."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(console: Console, *, disable: bool, fields: str | None = None) -> Progress:
    """``description [bar] n/N <fields> elapsed remaining``; ``fields`` is a TextColumn template of task fields."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if fields:
        columns.append(TextColumn(fields))
    return Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=disable)

"""The replay's (and the demo's) few lines of what the model said about NG frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from inspector.explanations import Explained

SHOWN = 5


def print_explanations(console: Console, explained: Sequence[Explained], total: int, where: Path) -> None:
    """Up to ``SHOWN`` NG frames' words, one line each, under the label of a random or demo model."""
    if not explained:
        return
    label = next((e.label for e in explained if e.label), None)
    title = "what the model said about NG frames" + (f" ([yellow]{label}[/])" if label else "")
    console.print(f"[bold]{title}:")
    for item in explained[:SHOWN]:
        console.print(
            f"  {escape(Path(item.source).name)} frame {item.frame_index}: {escape(item.class_name)} "
            f"{item.confidence:.2f} — [italic]{escape(item.text)}[/]"
        )
    if total > SHOWN:
        console.print(f"  ... and {total - SHOWN} more NG frame(s) explained in {where}")

"""A verdict's explanation as people read it: the NG frame's words, shortened, labelled for toy models.

The replay summary, the HTML report and the live page all show the words the same way: the most
confident explained defect of an NG frame, cut at a word boundary, and, for a random or demo
model, a label saying what such words are worth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_CHARS = 140

RANDOM_WORDS = "words of a RANDOM model: meaningless"
DEMO_WORDS = "words of a DEMO model, learnt from synthetic labels: no real inspector's reasoning"


@dataclass(frozen=True)
class Explained:
    """One NG frame's explanation: which frame, the defect explained, its words and what they are worth."""

    source: str
    frame_index: int
    class_name: str
    confidence: float
    text: str
    label: str | None  # ``words_label`` of the model that wrote them


def shorten(text: str, limit: int = MAX_CHARS) -> str:
    """One line of at most ``limit`` characters, cut at a word where there is one."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:.") + "…"


def explained(verdict: Mapping[str, Any]) -> Explained | None:
    """The explanation of an NG verdict (a JSON dict as written to JSONL): its most confident explained defect."""
    if verdict.get("verdict") != "NG":
        return None
    defects = [d for d in verdict.get("defects") or [] if (d.get("explanation") or "").strip()]
    if not defects:
        return None
    best = max(defects, key=lambda d: float(d.get("confidence", 0.0)))
    source = verdict.get("source") or {}
    return Explained(
        source=str(source.get("id", "")),
        frame_index=int(source.get("frame_index", 0)),
        class_name=str(best["class"]),
        confidence=float(best.get("confidence", 0.0)),
        text=shorten(str(best["explanation"])),
        label=words_label(verdict.get("model")),
    )


def words_label(model: Mapping[str, Any] | None) -> str | None:
    """What a model's words are worth when it is a random or demo model (None for a real checkpoint).

    ``model`` is a verdict's ``model`` block (``random_weights`` / ``demo_model`` flags)."""
    model = model or {}
    if model.get("random_weights"):
        return RANDOM_WORDS
    if model.get("demo_model"):
        return DEMO_WORDS
    return None

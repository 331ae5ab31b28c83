"""The overflow policies: which stored messages go, and in what order, when a new one does not fit.

Rejects are never victims (they expire instead). ``drop_oldest_ok``: OK verdicts first, then
UNCERTAIN, then NG, oldest first within each; ``drop_oldest``: the oldest of any verdict kind;
``drop_new``: the incoming verdict is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from inspector.mqtt.outbox.message import Kind, OutboxMessage

# Overflow victims, group by group; within a group the oldest goes first.
DROP_ORDER: dict[str, tuple[tuple[Kind, ...], ...]] = {
    "drop_oldest_ok": (("ok",), ("uncertain",), ("ng",)),
    "drop_oldest": (("ok", "uncertain", "ng"),),
    "drop_new": (),
}


def tally(messages: Sequence[OutboxMessage]) -> dict[str, int]:
    """Drop counts by counter name (``dropped_ok`` ...) for messages refused before they were stored."""
    counts: dict[str, int] = {}
    for m in messages:
        counts[f"dropped_{m.kind}"] = counts.get(f"dropped_{m.kind}", 0) + 1
    return counts


def oldest_victims(db: sqlite3.Connection, kinds: Sequence[Kind], over_n: int, over_b: int) -> list[int]:
    """The oldest stored messages of ``kinds`` whose removal brings the outbox under both bounds (a batch at most)."""
    marks = ",".join("?" * len(kinds))
    candidates = db.execute(
        f"SELECT seq, size FROM outbox WHERE kind IN ({marks}) ORDER BY seq LIMIT ?", (*kinds, 256)
    ).fetchall()
    victims = []
    for seq, size in candidates:
        if over_n <= 0 and over_b <= 0:
            break
        victims.append(seq)
        over_n -= 1
        over_b -= size
    return victims

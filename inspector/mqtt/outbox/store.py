"""The outbox's SQLite file: the lock that keeps it to one process, its schema, opening it in WAL mode, rows.

The statements are here; the transactions (group commit, acknowledgements) are ``Outbox``'s.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TextIO

from inspector.errors import InspectorError
from inspector.mqtt.outbox.message import OutboxMessage, OutboxRow

try:  # one process per outbox; fcntl exists on every platform the edge service runs on
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 1
CHUNK = 500  # stays below SQLite's bound-parameter limit

DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    kind TEXT NOT NULL,
    schema TEXT NOT NULL,
    schema_version TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind_seq ON outbox (kind, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
COLUMNS = "seq, message_id, topic, payload, qos, retain, kind, schema, schema_version, created_at, expires_at"


def insert(db: sqlite3.Connection, msg: OutboxMessage) -> int:
    """INSERT one message inside the open transaction; returns its sequence number."""
    cursor = db.execute(
        "INSERT INTO outbox (message_id, topic, payload, qos, retain, kind, schema, schema_version,"
        " created_at, expires_at, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            msg.message_id, msg.topic, msg.payload, msg.qos, int(msg.retain), msg.kind, msg.schema,
            msg.schema_version, msg.created_at, msg.expires_at, msg.size,
        ),
    )  # fmt: skip
    return int(cursor.lastrowid or 0)


def delete_rows(db: sqlite3.Connection, seqs: list[int]) -> None:
    """Plain DELETE inside the open transaction, in chunks."""
    for start in range(0, len(seqs), CHUNK):
        chunk = seqs[start : start + CHUNK]
        db.execute(f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(chunk))})", chunk)


def add_counters(db: sqlite3.Connection, counts: dict[str, int]) -> None:
    """Add to the persistent drop counters inside the open transaction."""
    for name, n in counts.items():
        if n:
            db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, n),
            )


def row_from_db(row: tuple) -> OutboxRow:
    seq, message_id, topic, payload, qos, retain, kind, schema, version, created_at, expires_at = row
    return OutboxRow(
        seq,
        OutboxMessage(
            message_id, topic, bytes(payload), kind, schema, version, qos, bool(retain), created_at, expires_at
        ),
    )


def lock_exclusive(path: Path) -> TextIO:
    """Hold ``<outbox>.lock`` for the outbox's life: two publishers draining one outbox would double-send."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".lock"), "a+")  # noqa: SIM115 - held until close()
    except OSError as error:
        raise InspectorError(
            f"cannot create the MQTT outbox in {path.parent}: {error.strerror}",
            "set sinks.mqtt.outbox to a writable path",
        ) from None
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise InspectorError(
                f"the MQTT outbox {path} is in use by another running publisher",
                "give each publishing process its own sinks.mqtt.outbox path",
            ) from None
    return handle


def open_db(path: Path, sync: str) -> sqlite3.Connection:
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; one connection shared under self._lock.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise InspectorError(
                f"the MQTT outbox {path} cannot use SQLite WAL mode (got {mode})",
                "put the outbox on a local filesystem (not NFS or a FUSE mount)",
            )
        db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise InspectorError(
                f"the MQTT outbox {path} has format {version}; this version reads format {SCHEMA_VERSION}",
                "drain it with the software that wrote it, or move it aside",
            )
        db.executescript(DDL)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return db
    except sqlite3.DatabaseError as error:
        raise InspectorError(
            f"cannot open the MQTT outbox {path}: {error}",
            "if the file is damaged, move it aside (its undelivered verdicts are then lost to MQTT)",
        ) from None


def write_error(path: Path, error: sqlite3.Error) -> InspectorError:
    return InspectorError(
        f"cannot write the MQTT outbox {path}: {error}",
        "check free disk space and permissions; verdicts are not being kept for delivery",
    )

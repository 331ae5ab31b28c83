"""What the outbox stores: one MQTT message to deliver at least once, and its place in the send order."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, get_args

Kind = Literal["ok", "ng", "uncertain", "reject"]
KINDS: tuple[Kind, ...] = get_args(Kind)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One MQTT message to deliver at least once."""

    message_id: str
    topic: str
    payload: bytes
    kind: Kind
    schema: str
    schema_version: str
    qos: int = 1
    retain: bool = False
    created_at: float = field(default_factory=time.time)
    expires_at: float | None = None

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A stored message and its place in the send order."""

    seq: int
    message: OutboxMessage

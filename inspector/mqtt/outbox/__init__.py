"""Durable MQTT outbox: every message is on disk before it is published, and leaves only on PUBACK.

- ``queue``: ``Outbox``, the thread-safe queue (group commit, acknowledgements, the memory window);
- ``message``: ``OutboxMessage`` / ``OutboxRow``, what it stores;
- ``store``: the SQLite file (lock, schema, WAL, statements);
- ``overflow``: which messages go when it is full.

The durability trade-off (``outbox_sync``) is described in ``inspector.mqtt.outbox.queue`` and docs/mqtt.md.
"""

from inspector.mqtt.outbox.message import KINDS, Kind, OutboxMessage, OutboxRow
from inspector.mqtt.outbox.queue import Outbox

__all__ = ["KINDS", "Kind", "Outbox", "OutboxMessage", "OutboxRow"]

"""The outbox sender: verdicts and their rejects, from the durable outbox to the broker, at least once.

``OutboxSender.messages_for`` turns a frame verdict into outbox messages (the verdict, and
for NG its reject). ``serve(link)`` then runs on the sink's one sender thread for the life of
one connection: it takes rows in sequence order, publishes them at QoS 1 and acknowledges each
in the outbox on its PUBACK. A new connection starts again from the oldest row still in the
outbox, so paho never re-sends its own in-memory copies and the outbox stays the only source
of truth.

A broker acknowledges a QoS 1 message before it is on disk (Mosquitto saves its database
periodically), so a broker crash can lose messages it had just acknowledged. After a lost
connection the sender therefore also re-sends what was acknowledged during the last
``redeliver_window_s`` before the loss. Subscribers see such re-sends as duplicates of the
same ``message_id`` and drop them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from inspector.config import MqttConfig
from inspector.mqtt.connection import Link, message_properties
from inspector.mqtt.outbox import Outbox, OutboxMessage, OutboxRow
from inspector.mqtt.topics import Topics
from inspector.payloads.reject import REJECT_SCHEMA_ID, REJECT_SCHEMA_VERSION, RejectMessage
from inspector.payloads.verdict import SCHEMA_ID, SCHEMA_VERSION, FrameVerdict

log = logging.getLogger(__name__)

_REDELIVER_MAX = 20_000  # memory bound of the re-send-after-broker-crash buffer


class OutboxSender:
    """Delivers the outbox over one link at a time; the sink's sender thread calls ``serve``."""

    def __init__(
        self,
        config: MqttConfig,
        topics: Topics,
        outbox: Outbox,
        wake: threading.Condition,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.topics = topics
        self.outbox = outbox
        self._clock = clock  # wall-clock seconds for reject expiry; injected by tests
        self._wake = wake  # the sink's condition: publish() and paho callbacks notify it
        self._drained = threading.Condition()  # wait_drained() waits here
        self._generation = 0  # bumped on every append, guarded by _wake
        self._inflight: dict[int, OutboxRow] = {}  # mid -> row of the current link; sender thread only
        self._recent: deque[tuple[float, OutboxRow]] = deque()  # acked rows, for re-sending after a broker crash
        self._lost_at: float | None = None
        self._high_seq = 0  # highest seq ever sent by this process: anything at or below it is a re-send
        self.figures = {"sent": 0, "acked": 0, "resent": 0, "redelivered": 0}

    # -- producer side -------------------------------------------------------------------

    def messages_for(self, verdict: FrameVerdict, now: float | None = None) -> list[OutboxMessage]:
        """The verdict's message and, for NG, its reject (expiry counted from now)."""
        now = self._clock() if now is None else now
        messages = [
            OutboxMessage(
                message_id=verdict.message_id,
                topic=self.topics.verdict,
                payload=verdict.to_json(include_tiles=False).encode(),
                kind=verdict.verdict.lower(),  # type: ignore[arg-type]
                schema=SCHEMA_ID,
                schema_version=SCHEMA_VERSION,
                created_at=now,
            )
        ]
        if verdict.verdict == "NG":
            reject = RejectMessage.from_verdict(
                verdict, expiry_s=self.config.reject_expiry_s, now=datetime.fromtimestamp(now, UTC)
            )
            messages.append(
                OutboxMessage(
                    message_id=reject.message_id,
                    topic=self.topics.reject,
                    payload=reject.to_json().encode(),
                    kind="reject",
                    schema=REJECT_SCHEMA_ID,
                    schema_version=REJECT_SCHEMA_VERSION,
                    created_at=now,
                    expires_at=now + self.config.reject_expiry_s,
                )
            )
        return messages

    def enqueue(self, messages: list[OutboxMessage]) -> None:
        """Store the messages (returns once they are durable) and wake the sender."""
        self.outbox.append(messages)
        with self._wake:
            self._generation += 1
            self._wake.notify_all()

    # -- sender thread -------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def serve(self, link: Link, closing: threading.Event) -> None:
        """Send until the link is lost or ``closing`` is set; rows stay in the outbox until acknowledged."""
        self._inflight = {}
        if not self._redeliver(link):
            return
        backlog = len(self.outbox)
        if backlog:
            log.info("draining %d message(s) from the outbox", backlog)
        last_seq = 0  # a new connection re-sends everything still in the outbox, in order
        while not closing.is_set():
            with self._wake:
                generation = self._generation
            acks, lost = link.take_acks()
            if acks:
                self._handle_acks(acks)
            if lost:
                return
            rows: list[OutboxRow] = []
            room = self.config.max_inflight - len(self._inflight)
            if room > 0:
                rows = self.outbox.take(last_seq, room)
                for row in rows:
                    if not self._send(link, row):
                        return  # connection gone; the row is still in the outbox
                    last_seq = row.seq
            if acks or rows:
                continue
            self.outbox.flush()  # idle: write the acknowledgements down before waiting
            with self._wake:
                idle = self._generation == generation or len(self._inflight) >= self.config.max_inflight
                if idle and not link.acked and not link.lost and not closing.is_set():
                    self._wake.wait(1.0)

    def connection_lost(self) -> None:
        """Called when an established link is lost: the next connection re-sends the last acknowledged ones."""
        self._lost_at = time.monotonic()
        self._inflight = {}
        self.notify_drained()

    def _redeliver(self, link: Link) -> bool:
        if self._lost_at is None or not self._recent:
            return True
        since = self._lost_at - self.config.redeliver_window_s
        again = [row for at, row in self._recent if at >= since]
        self._recent.clear()
        for row in again:
            if not self._send(link, row, track=False):
                return False
        self.figures["redelivered"] += len(again)
        if again:
            log.info("re-sent %d message(s) the broker acknowledged just before the connection was lost", len(again))
        return True

    def _send(self, link: Link, row: OutboxRow, *, track: bool = True) -> bool:
        msg = row.message
        expiry = None
        if msg.expires_at is not None:
            remaining = msg.expires_at - self._clock()
            if remaining <= 0:
                if track:
                    self.outbox.discard([row.seq], "expired")
                return True
            expiry = max(1, math.ceil(remaining))  # v5 expiry counts from creation, not from sending
        props = message_properties(
            self.config, schema=msg.schema, schema_version=msg.schema_version,
            message_id=msg.message_id, expiry_s=expiry,
        )  # fmt: skip
        info = link.client.publish(msg.topic, msg.payload, msg.qos, msg.retain, props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self.figures["sent"] += 1
        if row.seq <= self._high_seq:
            self.figures["resent"] += 1
        self._high_seq = max(self._high_seq, row.seq)
        if track:
            self._inflight[info.mid] = row
        return True

    def _handle_acks(self, acks: list[tuple[int, ReasonCode]]) -> None:
        done: list[OutboxRow] = []
        refused: list[tuple[OutboxRow, ReasonCode]] = []
        for mid, reason in acks:
            row = self._inflight.pop(mid, None)
            if row is None:
                continue  # status, health, responses, re-sends: not outbox rows
            if reason.is_failure:
                refused.append((row, reason))
            else:
                done.append(row)
        if done:
            self.outbox.ack([row.seq for row in done])
            self.figures["acked"] += len(done)
            self._remember(done)
        if refused:
            # Sending it again would be refused again and block the whole line's backlog.
            self.outbox.discard([row.seq for row, _ in refused], "refused")
            for row, reason in refused:
                log.error(
                    "broker refused %s message %s on %s: %s",
                    row.message.kind,
                    row.message.message_id,
                    row.message.topic,
                    reason,
                )
        self.notify_drained()

    def _remember(self, rows: list[OutboxRow]) -> None:
        if self.config.redeliver_window_s <= 0:
            return
        now = time.monotonic()
        self._recent.extend((now, row) for row in rows)
        horizon = now - self.config.redeliver_window_s
        while self._recent and (len(self._recent) > _REDELIVER_MAX or self._recent[0][0] < horizon):
            self._recent.popleft()

    # -- waiting -------------------------------------------------------------------------

    def notify_drained(self) -> None:
        with self._drained:
            self._drained.notify_all()

    def wait_drained(self, timeout_s: float, *, give_up: Callable[[], bool] | None = None) -> bool:
        """Wait until the outbox is empty (everything acknowledged); True if it is.

        ``give_up``: a callable checked on every wake-up; True ends the wait early.
        """
        deadline = time.monotonic() + timeout_s
        with self._drained:
            while len(self.outbox) > 0:
                if give_up is not None and give_up():
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._drained.wait(min(remaining, 0.25))
        return True

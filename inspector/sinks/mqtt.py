"""MQTT sink: frame verdicts to line controllers and dashboards, delivered at least once.

``publish`` only writes to the durable outbox (inspector/sinks/outbox.py) and returns; one
sender thread owns the broker connection. It takes rows in sequence order, publishes them
at QoS 1 and deletes each on its PUBACK. After any connection loss it starts again from the
oldest row still in the outbox, with a fresh paho client each time, so paho never re-sends
its own in-memory copies and the outbox stays the only source of truth.

A broker acknowledges a QoS 1 message before it is on disk (Mosquitto saves its database
periodically), so a broker crash can lose messages it had just acknowledged. After a lost
connection the sender therefore also re-sends what was acknowledged during the last
``redeliver_window_s`` before the loss. Subscribers see such re-sends as duplicates of the
same ``message_id`` and drop them.

Topics (see topics.py): ``verdict`` every frame (QoS 1), ``reject`` NG only (QoS 1, v5 message
expiry counted from creation), ``status`` retained birth / Will, ``health`` QoS 0 heartbeats,
``cmd`` inbound MQTT v5 requests answered with ``respond``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from inspector.config import MqttConfig, StationConfig
from inspector.errors import InspectorError
from inspector.mqtt_url import mqtt_config_from_url
from inspector.sinks.messages import (
    REJECT_SCHEMA_ID,
    REJECT_SCHEMA_VERSION,
    STATUS_SCHEMA_ID,
    STATUS_SCHEMA_VERSION,
    RejectMessage,
    StationState,
    StatusMessage,
)
from inspector.sinks.mqtt_client import (
    CONTENT_TYPE,
    MqttConnectError,
    PahoLog,
    Will,
    build_client,
    check_connection,
    closed_before_connack,
    connect,
    explain_connack,
    is_v5,
    message_properties,
    no_connack,
    resolve_password,
    tls_context,
)
from inspector.sinks.outbox import Outbox, OutboxMessage, OutboxRow
from inspector.sinks.topics import Topics
from inspector.payloads.verdict import SCHEMA_ID, SCHEMA_VERSION, FrameVerdict, StationRef

__all__ = ["Command", "MqttSink", "check_connection", "default_client_id", "mqtt_config_from_url"]

log = logging.getLogger(__name__)

_REDELIVER_MAX = 20_000  # memory bound of the re-send-after-broker-crash buffer
_STABLE_S = 10.0  # a connection that lasted this long resets the reconnect back-off
_BIRTH_FIELDS = ("model", "backend", "precision")


@dataclass(frozen=True)
class Command:
    """An inbound message on ``.../cmd`` or ``.../cmd/<name>``; answer it with ``MqttSink.respond``."""

    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None
    content_type: str | None = None
    user_properties: list[tuple[str, str]] = field(default_factory=list)
    properties: Properties | None = None


CommandHandler = Callable[[Command], None]


def default_client_id(station: StationConfig) -> str:
    """Stable per camera, so a restarted publisher is recognisably the same client."""
    return f"inspector-{station.site}-{station.area}-{station.line}-{station.station}-{station.camera}"


class _Link:
    """One network connection: a fresh paho client and what its callbacks report."""

    def __init__(self, client: mqtt.Client, wake: threading.Condition, paho_log: PahoLog) -> None:
        self.client = client
        self.wake = wake
        self.paho_log = paho_log
        self.ready = threading.Event()  # CONNACK received, or the connection is gone
        self.connack: ReasonCode | None = None
        self.lost = False
        self.lost_reason: ReasonCode | None = None
        self.acked: list[tuple[int, ReasonCode]] = []  # guarded by wake
        self.inflight: dict[int, OutboxRow] = {}  # mid -> row; sender thread only

    @property
    def connected(self) -> bool:
        return self.connack is not None and not self.connack.is_failure and not self.lost

    def on_connect(self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        self.connack = reason
        self.ready.set()
        with self.wake:
            self.wake.notify()

    def on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        with self.wake:
            self.lost = True
            self.lost_reason = reason
            self.wake.notify()
        self.ready.set()

    def on_publish(self, _c: mqtt.Client, _u: object, mid: int, reason: ReasonCode, _p: object) -> None:
        with self.wake:
            self.acked.append((mid, reason))
            self.wake.notify()


class MqttSink:
    """The Sink for MQTT. Starts connecting in the background at construction (unless ``start=False``).

    A broker that is down is not an error: verdicts wait in the outbox. Configuration
    problems that a retry cannot cure (bad credentials, TLS trust) are logged as errors and
    shown in ``stats()["last_error"]``; call ``check_connection(config)`` first to fail fast.
    """

    def __init__(
        self,
        config: MqttConfig,
        station: StationConfig,
        *,
        birth: Mapping[str, Any] | None = None,
        start: bool = True,
    ) -> None:
        self.config = config
        self.station = station
        self.topics = Topics.for_station(config.topic_root, station)
        self.client_id = config.client_id or default_client_id(station)
        # Fail now, not in the background, on what no retry can fix.
        resolve_password(config)
        if config.tls is not None:
            tls_context(config.tls)
        self._where = f"{'mqtts' if config.tls else 'mqtt'}://{config.host}:{config.port}"
        self._outbox = Outbox.from_config(config)
        self._station_ref = StationRef(**station.model_dump())
        self._birth = dict(birth or {})
        self._state: StationState = "online"
        self._status_extra: dict[str, Any] = {}
        self._status_reason: str | None = None
        self._status_lock = threading.Lock()
        self._wake = threading.Condition()  # sender waits here; publish() and paho callbacks notify
        self._drained = threading.Condition()  # wait_drained() waits here
        self._generation = 0  # bumped on every append, guarded by _wake
        self._closing = threading.Event()
        self._closed = False
        self._link: _Link | None = None
        self._command_handler: CommandHandler | None = None
        self._recent: deque[tuple[float, OutboxRow]] = deque()  # acked rows, for re-sending after a broker crash
        self._lost_at: float | None = None
        self._high_seq = 0  # highest seq ever sent by this process: anything at or below it is a re-send
        self._last_error: InspectorError | None = None
        self._last_attempt_failed = False
        self._figures = {
            "sent": 0, "acked": 0, "resent": 0, "redelivered": 0, "connects": 0,
            "connection_losses": 0, "health_dropped": 0,
        }  # fmt: skip
        self._thread = threading.Thread(target=self._run, name=f"mqtt-sink[{self.client_id}]", daemon=True)
        if start:
            self.start()

    @classmethod
    def from_url(
        cls,
        url: str,
        station: StationConfig,
        *,
        base: MqttConfig | None = None,
        birth: Mapping[str, Any] | None = None,
    ) -> MqttSink:
        """For ``--publish URL``: the URL's broker on top of ``base`` (the station file's sinks.mqtt)."""
        return cls(mqtt_config_from_url(url, base), station, birth=birth)

    # -- the Sink protocol ---------------------------------------------------------------

    def start(self, *, check_timeout_s: float | None = None) -> None:
        """Start the background sender (idempotent). With ``check_timeout_s``, first try the
        broker once: bad credentials or TLS trouble raise MqttConnectError; a down broker only warns."""
        if check_timeout_s is not None:
            try:
                check_connection(self.config, check_timeout_s, client_id=f"{self.client_id}-check")
            except MqttConnectError as error:
                if not error.transient:
                    raise
                log.warning("MQTT broker not reachable yet; verdicts wait in the outbox: %s", error.problem)
        if self._closed:
            raise InspectorError("start() on a closed MQTT sink: make a new one")
        if self._thread.ident is None:  # not started yet
            self._thread.start()

    def publish(self, verdict: FrameVerdict) -> None:
        """Store the verdict (and, for NG, its reject message) in the outbox; returns once durable."""
        if self._closed:
            raise InspectorError("publish() on a closed MQTT sink")
        now = time.time()
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
        self._outbox.append(messages)
        with self._wake:
            self._generation += 1
            self._wake.notify()

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what can be delivered within ``timeout_s``, say offline, disconnect.

        What is left stays in the outbox and goes first on the next start.
        """
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s
        if self._thread.is_alive():
            self.wait_drained(max(0.0, timeout_s * 0.8), give_up_when_disconnected=True)
            self._say_offline(min(1.0, max(0.0, deadline - time.monotonic())))
            self._closing.set()
            with self._wake:
                self._wake.notify()
            self._thread.join(max(0.1, deadline - time.monotonic()))
            if self._thread.is_alive():
                log.warning("MQTT sender did not stop within %.1f s; abandoning it", timeout_s)
        self._closing.set()
        left = len(self._outbox)
        self._outbox.close()
        log.info(
            "MQTT sink closed: %d message(s) acknowledged by the broker, %d left in %s for the next run",
            self._figures["acked"],
            left,
            self.config.outbox,
        )

    def __enter__(self) -> MqttSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- status, health, commands --------------------------------------------------------

    def set_status(
        self,
        state: StationState,
        extra: Mapping[str, Any] | None = None,
        *,
        reason: str | None = None,
        birth: Mapping[str, Any] | None = None,
    ) -> None:
        """Set the retained status (online / degraded / offline). Sent now if connected, else on connect.

        ``reason`` fills the message's top-level ``reason``; ``birth`` replaces the birth fields
        (model, backend, precision, tiling, ...) when what runs has changed, e.g. after a reload.
        """
        if state not in ("online", "degraded", "offline"):
            raise ValueError(f"state must be online, degraded or offline, not {state!r}")
        with self._status_lock:
            self._state = state
            self._status_extra = dict(extra or {})
            self._status_reason = reason
            if birth is not None:
                self._birth = dict(birth)
        link = self._link
        if link is not None and link.connected:
            self._publish_status(link)

    def publish_health(self, payload: Mapping[str, Any]) -> bool:
        """A heartbeat to ``.../health`` at QoS 0, not stored: False (and counted) when not connected."""
        link = self._link
        if link is None or not link.connected:
            self._figures["health_dropped"] += 1
            return False
        props = None
        if is_v5(self.config):
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = CONTENT_TYPE
        info = link.client.publish(self.topics.health, json.dumps(dict(payload), default=str), 0, False, props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._figures["health_dropped"] += 1
            return False
        return True

    def on_command(self, callback: CommandHandler) -> None:
        """Receive messages on ``.../cmd`` and ``.../cmd/#`` (QoS 1).

        ``callback`` runs on the network thread: keep it short, hand long work to another thread.
        """
        self._command_handler = callback
        link = self._link
        if link is not None and link.connected:
            link.client.subscribe(self.topics.cmd + "/#", qos=1)

    def respond(
        self,
        response_topic: str,
        correlation_data: bytes | None,
        payload: bytes | str | Mapping[str, Any],
        *,
        qos: int = 1,
    ) -> bool:
        """Answer a Command (MQTT v5 request/response). Not stored: False when not connected."""
        link = self._link
        if link is None or not link.connected:
            log.warning("cannot answer on %s: not connected to the broker", response_topic)
            return False
        props = None
        if is_v5(self.config):
            props = Properties(PacketTypes.PUBLISH)
            if correlation_data is not None:
                props.CorrelationData = correlation_data
            if isinstance(payload, Mapping):
                props.ContentType = CONTENT_TYPE
        data = json.dumps(dict(payload), default=str) if isinstance(payload, Mapping) else payload
        return link.client.publish(response_topic, data, qos, False, props).rc == mqtt.MQTT_ERR_SUCCESS

    # -- figures -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        link = self._link
        return link is not None and link.connected

    @property
    def last_error(self) -> InspectorError | None:
        """The last connection failure (cleared on success)."""
        return self._last_error

    def stats(self) -> dict[str, Any]:
        """Outbox depth and bytes, messages sent / acknowledged / re-sent, drops by reason, connection state."""
        link = self._link
        stats: dict[str, Any] = self._outbox.stats()
        stats.update(self._figures)
        stats.update(
            connected=self.connected,
            inflight=len(link.inflight) if link is not None else 0,
            state=self._state,
            last_error=self._last_error.problem if self._last_error else None,
        )
        return stats

    def wait_drained(self, timeout_s: float, *, give_up_when_disconnected: bool = False) -> bool:
        """Wait until the outbox is empty (everything acknowledged); True if it is."""
        deadline = time.monotonic() + timeout_s
        with self._drained:
            while len(self._outbox) > 0:
                if give_up_when_disconnected and self._last_attempt_failed and not self.connected:
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._drained.wait(min(remaining, 0.25))
        return True

    # -- the sender thread ---------------------------------------------------------------

    def _run(self) -> None:
        delay = self.config.reconnect.initial_s
        while not self._closing.is_set():
            link = None
            try:
                link = self._open_link()
                if link is not None:
                    since = time.monotonic()
                    self._serve(link)
                    if time.monotonic() - since > _STABLE_S:  # a flapping link (e.g. a duplicate client id) backs off
                        delay = self.config.reconnect.initial_s
            except Exception:  # noqa: BLE001 - the sender must outlive any one failure
                log.exception("MQTT sender error; reconnecting")
            finally:
                if link is not None:
                    self._drop_link(link)
            if self._closing.is_set():
                break
            if link is None or not link.connected:
                self._outbox.purge_expired()  # stale rejects must not wait for the broker
                self._closing.wait(delay)
                delay = min(delay * 2, self.config.reconnect.max_s)

    def _open_link(self) -> _Link | None:
        will = Will(
            self.topics.status,
            self._status_message("offline", reason="connection lost (MQTT Will)").to_json().encode(),
            properties=self._status_properties(PacketTypes.WILLMESSAGE),
        )
        paho_log = PahoLog()
        try:
            client = build_client(self.config, self.client_id, will=will, paho_log=paho_log)
        except InspectorError as error:  # e.g. the password file vanished since start
            self._record_failure(error)
            return None
        link = _Link(client, self._wake, paho_log)
        client.on_connect, client.on_disconnect = link.on_connect, link.on_disconnect
        client.on_publish = link.on_publish
        client.on_message = self._on_message
        try:
            connect(client, self.config)
        except MqttConnectError as error:
            self._record_failure(error)
            return None
        client.loop_start()
        deadline = time.monotonic() + self.config.connect_timeout_s
        while not link.ready.wait(0.1):
            if self._closing.is_set() or time.monotonic() > deadline:
                break
        if link.connack is not None and link.connack.is_failure:
            self._record_failure(explain_connack(link.connack, self.config))
        elif not link.connected and link.lost:
            self._record_failure(closed_before_connack(self.config, paho_log))
        elif not link.connected:
            self._record_failure(no_connack(self.config, self.config.connect_timeout_s))
        else:
            return link
        self._stop_client(client)
        return None

    def _serve(self, link: _Link) -> None:
        self._on_connected(link)
        last_seq = 0  # a new connection re-sends everything still in the outbox, in order
        while not self._closing.is_set():
            with self._wake:
                acks, link.acked = link.acked, []
                generation = self._generation
                lost = link.lost
            if acks:
                self._handle_acks(link, acks)
            if lost:
                return
            rows: list[OutboxRow] = []
            room = self.config.max_inflight - len(link.inflight)
            if room > 0:
                rows = self._outbox.take(last_seq, room)
                for row in rows:
                    if not self._send(link, row):
                        return  # connection gone; the row is still in the outbox
                    last_seq = row.seq
            if acks or rows:
                continue
            with self._wake:
                idle = self._generation == generation or len(link.inflight) >= self.config.max_inflight
                if idle and not link.acked and not link.lost and not self._closing.is_set():
                    self._wake.wait(1.0)

    def _send(self, link: _Link, row: OutboxRow, *, track: bool = True) -> bool:
        msg = row.message
        expiry = None
        if msg.expires_at is not None:
            remaining = msg.expires_at - time.time()
            if remaining <= 0:
                if track:
                    self._outbox.discard([row.seq], "expired")
                return True
            expiry = max(1, math.ceil(remaining))  # v5 expiry counts from creation, not from sending
        props = message_properties(
            self.config, schema=msg.schema, schema_version=msg.schema_version,
            message_id=msg.message_id, expiry_s=expiry,
        )  # fmt: skip
        info = link.client.publish(msg.topic, msg.payload, msg.qos, msg.retain, props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self._figures["sent"] += 1
        if row.seq <= self._high_seq:
            self._figures["resent"] += 1
        self._high_seq = max(self._high_seq, row.seq)
        if track:
            link.inflight[info.mid] = row
        return True

    def _handle_acks(self, link: _Link, acks: list[tuple[int, ReasonCode]]) -> None:
        done: list[OutboxRow] = []
        refused: list[tuple[OutboxRow, ReasonCode]] = []
        for mid, reason in acks:
            row = link.inflight.pop(mid, None)
            if row is None:
                continue  # status, health, responses, re-sends: not outbox rows
            if reason.is_failure:
                refused.append((row, reason))
            else:
                done.append(row)
        if done:
            self._outbox.ack([row.seq for row in done])
            self._figures["acked"] += len(done)
            self._remember(done)
        if refused:
            # Sending it again would be refused again and block the whole line's backlog.
            self._outbox.discard([row.seq for row, _ in refused], "refused")
            for row, reason in refused:
                log.error(
                    "broker refused %s message %s on %s: %s",
                    row.message.kind,
                    row.message.message_id,
                    row.message.topic,
                    reason,
                )
        with self._drained:
            self._drained.notify_all()

    def _remember(self, rows: list[OutboxRow]) -> None:
        if self.config.redeliver_window_s <= 0:
            return
        now = time.monotonic()
        self._recent.extend((now, row) for row in rows)
        horizon = now - self.config.redeliver_window_s
        while self._recent and (len(self._recent) > _REDELIVER_MAX or self._recent[0][0] < horizon):
            self._recent.popleft()

    def _on_connected(self, link: _Link) -> None:
        self._figures["connects"] += 1
        self._link = link
        if self._last_error is not None:
            log.info("connected to %s after earlier failures (%s)", self._where, self._last_error.problem)
        else:
            log.info("connected to %s as %s", self._where, self.client_id)
        self._last_error = None
        self._last_attempt_failed = False
        self._publish_status(link)
        if self._command_handler is not None:
            link.client.subscribe(self.topics.cmd + "/#", qos=1)
        if self._lost_at is not None and self._recent:
            since = self._lost_at - self.config.redeliver_window_s
            again = [row for at, row in self._recent if at >= since]
            self._recent.clear()
            for row in again:
                if not self._send(link, row, track=False):
                    return
            self._figures["redelivered"] += len(again)
            if again:
                log.info(
                    "re-sent %d message(s) the broker acknowledged just before the connection was lost", len(again)
                )
        backlog = len(self._outbox)
        if backlog:
            log.info("draining %d message(s) from the outbox", backlog)

    def _drop_link(self, link: _Link) -> None:
        self._link = None
        # An established link dropped for any reason but close() is a loss: paho may report "no connection"
        # to publish() before its on_disconnect runs, and the redelivery after a broker crash must not depend on it.
        if link.connack is not None and not link.connack.is_failure and not self._closing.is_set():
            self._figures["connection_losses"] += 1
            self._lost_at = time.monotonic()
            self._last_attempt_failed = True
            reason = link.lost_reason
            why = f" ({reason})" if reason is not None and reason.value != 0 else ""
            if link.paho_log.errors:
                why += f" ({link.paho_log.errors[-1]})"
            log.warning(
                "lost the connection to %s%s; %d message(s) wait in the outbox", self._where, why, len(self._outbox)
            )
        self._stop_client(link.client)
        with self._drained:
            self._drained.notify_all()

    @staticmethod
    def _stop_client(client: mqtt.Client) -> None:
        try:
            client.disconnect()
        except Exception:  # noqa: BLE001 - the connection may already be gone
            pass
        client.loop_stop()

    def _record_failure(self, error: InspectorError) -> None:
        changed = self._last_error is None or self._last_error.problem != error.problem
        self._last_error = error
        self._last_attempt_failed = True
        transient = getattr(error, "transient", False)
        if changed:
            level = logging.WARNING if transient else logging.ERROR
            log.log(level, "MQTT: %s; verdicts wait in the outbox (retrying)", error)
        else:
            log.debug("MQTT: still failing: %s", error.problem)
        with self._drained:
            self._drained.notify_all()

    # -- status helpers ------------------------------------------------------------------

    def _status_message(self, state: StationState, *, reason: str | None = None) -> StatusMessage:
        with self._status_lock:
            details = {k: v for k, v in self._birth.items() if k not in _BIRTH_FIELDS}
            details.update(self._status_extra)
        return StatusMessage(
            state=state,
            reason=reason,
            at=datetime.now(UTC),
            station=self._station_ref,
            client_id=self.client_id,
            details=details,
            **{k: str(self._birth[k]) for k in _BIRTH_FIELDS if self._birth.get(k) is not None},
        )

    def _status_properties(self, packet_type: int = PacketTypes.PUBLISH) -> Properties | None:
        if not is_v5(self.config):
            return None
        props = Properties(packet_type)
        props.ContentType = CONTENT_TYPE
        props.UserProperty = [("schema", STATUS_SCHEMA_ID), ("schema-version", STATUS_SCHEMA_VERSION)]
        return props

    def _publish_status(self, link: _Link, state: StationState | None = None, reason: str | None = None) -> Any:
        message = self._status_message(state or self._state, reason=reason or self._status_reason)
        props = self._status_properties()
        if props is not None:
            props.UserProperty = [*props.UserProperty, ("message-id", message.message_id)]
        return link.client.publish(self.topics.status, message.to_json(), 1, True, props)

    def _say_offline(self, timeout_s: float) -> None:
        """A clean close sends no Will, so publish the offline status ourselves."""
        link = self._link
        if link is None or not link.connected:
            return
        info = self._publish_status(link, "offline", "closed")
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):
            pass  # the connection went away meanwhile; the Will says offline instead

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        handler = self._command_handler
        if handler is None or not (message.topic == self.topics.cmd or message.topic.startswith(self.topics.cmd + "/")):
            return
        props = getattr(message, "properties", None)
        command = Command(
            topic=message.topic,
            payload=bytes(message.payload),
            response_topic=getattr(props, "ResponseTopic", None),
            correlation_data=getattr(props, "CorrelationData", None),
            content_type=getattr(props, "ContentType", None),
            user_properties=list(getattr(props, "UserProperty", []) or []),
            properties=props,
        )
        try:
            handler(command)
        except Exception:  # noqa: BLE001 - a faulty handler must not kill the network thread
            log.exception("command handler failed on %s", message.topic)

"""MQTT sink: frame verdicts to line controllers and dashboards, delivered at least once.

``publish`` only writes to the durable outbox (outbox.py) and returns; one sender thread
owns the broker connection. Its loop is here: open a link (connection.py), serve the outbox
over it (sender.py) and the station channel (channel.py: status, health, commands), and on
any loss reconnect with back-off, each time with a fresh paho client.

Topics (see topics.py): ``verdict`` every frame (QoS 1), ``reject`` NG only (QoS 1, v5 message
expiry counted from creation), ``status`` retained birth / Will, ``health`` QoS 0 heartbeats,
``cmd`` inbound MQTT v5 requests answered with ``respond``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from inspector.backoff import Backoff
from inspector.config import MqttConfig, StationConfig
from inspector.errors import InspectorError
from inspector.mqtt.channel import CommandHandler, StationChannel
from inspector.mqtt.connection import (
    Link,
    check_connection_or_warn,
    open_link,
    resolve_password,
    tls_context,
)
from inspector.mqtt.outbox import Outbox
from inspector.mqtt.sender import OutboxSender
from inspector.mqtt.topics import Topics
from inspector.mqtt.url import mqtt_config_from_url
from inspector.payloads.status import StationState
from inspector.payloads.verdict import FrameVerdict, StationRef

log = logging.getLogger(__name__)

_STABLE_S = 10.0  # a connection that lasted this long resets the reconnect back-off


def default_client_id(station: StationConfig) -> str:
    """Stable per camera, so a restarted publisher is recognisably the same client."""
    return f"inspector-{station.site}-{station.area}-{station.line}-{station.station}-{station.camera}"


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
        clock: Callable[[], float] = time.time,
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
        self._wake = threading.Condition()  # the sender thread waits here; publish() and paho callbacks notify
        self._link: Link | None = None
        # clock: wall-clock seconds for reject expiry (tests inject one instead of sleeping past it).
        outbox = Outbox.from_config(config, clock=clock)
        self._sender = OutboxSender(config, self.topics, outbox, self._wake, clock=clock)
        self.channel = StationChannel(
            config, StationRef(**station.model_dump()), self.topics, self.client_id, lambda: self._link, birth=birth
        )
        self._closing = threading.Event()
        self._closed = False
        self._last_error: InspectorError | None = None
        self._last_attempt_failed = False
        self._figures = {"connects": 0, "connection_losses": 0}
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
            check_connection_or_warn(self.config, check_timeout_s, client_id=f"{self.client_id}-check", logger=log)
        if self._closed:
            raise InspectorError("start() on a closed MQTT sink: make a new one")
        if self._thread.ident is None:  # not started yet
            self._thread.start()

    def publish(self, verdict: FrameVerdict) -> None:
        """Store the verdict (and, for NG, its reject message) in the outbox; returns once durable."""
        if self._closed:
            raise InspectorError("publish() on a closed MQTT sink")
        self._sender.enqueue(self._sender.messages_for(verdict))

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
            self.channel.say_offline(min(1.0, max(0.0, deadline - time.monotonic())))
            self._closing.set()
            with self._wake:
                self._wake.notify_all()
            self._thread.join(max(0.1, deadline - time.monotonic()))
            if self._thread.is_alive():
                log.warning("MQTT sender did not stop within %.1f s; abandoning it", timeout_s)
        self._closing.set()
        outbox = self._sender.outbox
        left = len(outbox)
        outbox.close()
        log.info(
            "MQTT sink closed: %d message(s) acknowledged by the broker, %d left in %s for the next run",
            self._sender.figures["acked"],
            left,
            self.config.outbox,
        )

    def __enter__(self) -> MqttSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the station channel (see channel.py) --------------------------------------------

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
        self.channel.set_status(state, extra, reason=reason, birth=birth)

    def publish_health(self, payload: Mapping[str, Any]) -> bool:
        """A heartbeat to ``.../health`` at QoS 0, not stored: False (and counted) when not connected."""
        return self.channel.publish_health(payload)

    def on_command(self, callback: CommandHandler) -> None:
        """Receive messages on ``.../cmd`` and ``.../cmd/#`` (QoS 1); ``callback`` runs on the network thread."""
        self.channel.on_command(callback)

    def respond(
        self,
        response_topic: str,
        correlation_data: bytes | None,
        payload: bytes | str | Mapping[str, Any],
        *,
        qos: int = 1,
    ) -> bool:
        """Answer a Command (MQTT v5 request/response). Not stored: False when not connected."""
        return self.channel.respond(response_topic, correlation_data, payload, qos=qos)

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
        stats: dict[str, Any] = self._sender.outbox.stats()
        stats.update(self._sender.figures)
        stats.update(self._figures)
        stats.update(
            health_dropped=self.channel.health_dropped,
            connected=self.connected,
            inflight=self._sender.inflight if self._link is not None else 0,
            state=self.channel.state,
            last_error=self._last_error.problem if self._last_error else None,
        )
        return stats

    def wait_drained(self, timeout_s: float, *, give_up_when_disconnected: bool = False) -> bool:
        """Wait until the outbox is empty (everything acknowledged); True if it is."""
        give_up = (lambda: self._last_attempt_failed and not self.connected) if give_up_when_disconnected else None
        return self._sender.wait_drained(timeout_s, give_up=give_up)

    # -- the sender thread ---------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff.from_policy(self.config.reconnect)
        while not self._closing.is_set():
            link = None
            try:
                link = self._open_link()
                if link is not None:
                    since = time.monotonic()
                    self._on_connected(link)
                    self._sender.serve(link, self._closing)
                    if time.monotonic() - since > _STABLE_S:  # a flapping link (e.g. a duplicate client id) backs off
                        backoff.reset()
            except Exception:  # noqa: BLE001 - the sender must outlive any one failure
                log.exception("MQTT sender error; reconnecting")
            finally:
                if link is not None:
                    self._drop_link(link)
            if self._closing.is_set():
                break
            if link is None or not link.connected:
                self._sender.outbox.purge_expired()  # stale rejects must not wait for the broker
                self._closing.wait(backoff.next_delay())

    def _open_link(self) -> Link | None:
        try:
            return open_link(
                self.config,
                self.client_id,
                wake=self._wake,
                will=self.channel.will(),
                on_message=self.channel.on_message,
                stop=self._closing,
            )
        except InspectorError as error:  # MqttConnectError, or e.g. the password file vanished since start
            self._record_failure(error)
            return None

    def _on_connected(self, link: Link) -> None:
        self._figures["connects"] += 1
        self._link = link
        if self._last_error is not None:
            log.info("connected to %s after earlier failures (%s)", self._where, self._last_error.problem)
        else:
            log.info("connected to %s as %s", self._where, self.client_id)
        self._last_error = None
        self._last_attempt_failed = False
        self.channel.on_connected(link)

    def _drop_link(self, link: Link) -> None:
        self._link = None
        # An established link dropped for any reason but close() is a loss: paho may report "no connection"
        # to publish() before its on_disconnect runs, and the redelivery after a broker crash must not depend on it.
        if link.established and not self._closing.is_set():
            self._figures["connection_losses"] += 1
            self._last_attempt_failed = True
            self._sender.connection_lost()
            reason = link.lost_reason
            why = f" ({reason})" if reason is not None and reason.value != 0 else ""
            if link.paho_log.errors:
                why += f" ({link.paho_log.errors[-1]})"
            log.warning(
                "lost the connection to %s%s; %d message(s) wait in the outbox",
                self._where,
                why,
                len(self._sender.outbox),
            )
        link.close()
        self._sender.notify_drained()

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
        self._sender.notify_drained()

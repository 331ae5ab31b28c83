"""The station channel: what a station says about itself and hears, beside its verdicts.

- ``status``: retained online / degraded / offline. The birth message goes out on every
  connect; the MQTT Will (registered with each connection) says offline when the process
  dies without a goodbye; a clean close publishes offline itself.
- ``health``: heartbeats at QoS 0, not stored: dropped (and counted) while disconnected.
- ``cmd``: inbound MQTT v5 requests on ``.../cmd`` and ``.../cmd/<name>``, handed to a
  callback as ``Command``; ``respond`` answers on the request's response topic.

None of these go through the outbox: a status or a heartbeat is only worth its latest value,
and a command answered late is answered wrong.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from inspector.config import MqttConfig
from inspector.mqtt.connection import CONTENT_TYPE, Link, Will, is_v5
from inspector.mqtt.topics import Topics
from inspector.payloads.status import STATUS_SCHEMA_ID, STATUS_SCHEMA_VERSION, StationState, StatusMessage
from inspector.payloads.verdict import StationRef

log = logging.getLogger(__name__)

_BIRTH_FIELDS = ("model", "backend", "precision")


@dataclass(frozen=True)
class Command:
    """An inbound message on ``.../cmd`` or ``.../cmd/<name>``; answer it with ``MqttSink.respond``.

    The payload is raw bytes: edge/commands.py validates it against inspector/payloads/command.py.
    """

    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None
    content_type: str | None = None
    user_properties: list[tuple[str, str]] = field(default_factory=list)
    properties: Properties | None = None


CommandHandler = Callable[[Command], None]


class StationChannel:
    """Status (birth and Will), health and commands of one station, over whichever link is current."""

    def __init__(
        self,
        config: MqttConfig,
        station: StationRef,
        topics: Topics,
        client_id: str,
        current_link: Callable[[], Link | None],
        *,
        birth: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.topics = topics
        self.client_id = client_id
        self._station = station
        self._current_link = current_link
        self._birth = dict(birth or {})
        self._state: StationState = "online"
        self._extra: dict[str, Any] = {}
        self._reason: str | None = None
        self._lock = threading.Lock()
        self._command_handler: CommandHandler | None = None
        self.health_dropped = 0

    @property
    def state(self) -> StationState:
        return self._state

    def _link(self) -> Link | None:
        link = self._current_link()
        return link if link is not None and link.connected else None

    # -- connection life -----------------------------------------------------------------

    def will(self) -> Will:
        """The death certificate to register with a new connection."""
        return Will(
            self.topics.status,
            self._message("offline", reason="connection lost (MQTT Will)").to_json().encode(),
            properties=self._properties(PacketTypes.WILLMESSAGE),
        )

    def on_connected(self, link: Link) -> None:
        """Birth message, and the command subscription when someone listens."""
        self._publish_status(link)
        if self._command_handler is not None:
            link.client.subscribe(self.topics.cmd + "/#", qos=1)

    def say_offline(self, timeout_s: float) -> None:
        """A clean close sends no Will, so publish the offline status ourselves."""
        link = self._link()
        if link is None:
            return
        info = self._publish_status(link, "offline", "closed")
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):
            pass  # the connection went away meanwhile; the Will says offline instead

    # -- status --------------------------------------------------------------------------

    def set_status(
        self,
        state: StationState,
        extra: Mapping[str, Any] | None = None,
        *,
        reason: str | None = None,
        birth: Mapping[str, Any] | None = None,
    ) -> None:
        """Set the retained status; sent now if connected, else with the next birth message."""
        if state not in ("online", "degraded", "offline"):
            raise ValueError(f"state must be online, degraded or offline, not {state!r}")
        with self._lock:
            self._state = state
            self._extra = dict(extra or {})
            self._reason = reason
            if birth is not None:
                self._birth = dict(birth)
        link = self._link()
        if link is not None:
            self._publish_status(link)

    def _message(self, state: StationState, *, reason: str | None = None) -> StatusMessage:
        with self._lock:
            details = {k: v for k, v in self._birth.items() if k not in _BIRTH_FIELDS}
            details.update(self._extra)
            birth = {k: str(self._birth[k]) for k in _BIRTH_FIELDS if self._birth.get(k) is not None}
        return StatusMessage(
            state=state,
            reason=reason,
            at=datetime.now(UTC),
            station=self._station,
            client_id=self.client_id,
            details=details,
            **birth,
        )

    def _properties(self, packet_type: int = PacketTypes.PUBLISH) -> Properties | None:
        if not is_v5(self.config):
            return None
        props = Properties(packet_type)
        props.ContentType = CONTENT_TYPE
        props.UserProperty = [("schema", STATUS_SCHEMA_ID), ("schema-version", STATUS_SCHEMA_VERSION)]
        return props

    def _publish_status(
        self, link: Link, state: StationState | None = None, reason: str | None = None
    ) -> mqtt.MQTTMessageInfo:
        message = self._message(state or self._state, reason=reason or self._reason)
        props = self._properties()
        if props is not None:
            props.UserProperty = [*props.UserProperty, ("message-id", message.message_id)]
        return link.client.publish(self.topics.status, message.to_json(), 1, True, props)

    # -- health --------------------------------------------------------------------------

    def publish_health(self, payload: Mapping[str, Any]) -> bool:
        """A heartbeat to ``.../health`` at QoS 0, not stored: False (and counted) when not connected."""
        link = self._link()
        if link is None:
            self.health_dropped += 1
            return False
        props = None
        if is_v5(self.config):
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = CONTENT_TYPE
        info = link.client.publish(self.topics.health, json.dumps(dict(payload), default=str), 0, False, props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.health_dropped += 1
            return False
        return True

    # -- commands ------------------------------------------------------------------------

    def on_command(self, callback: CommandHandler) -> None:
        """Receive messages on ``.../cmd`` and ``.../cmd/#`` (QoS 1).

        ``callback`` runs on the network thread: keep it short, hand long work to another thread.
        """
        self._command_handler = callback
        link = self._link()
        if link is not None:
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
        link = self._link()
        if link is None:
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

    def on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        """paho's on_message for the station's links: commands go to the handler, anything else is ignored."""
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

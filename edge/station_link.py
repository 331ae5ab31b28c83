"""A station's second MQTT connection: inbound triggers, and the retained last-NG picture.

The verdict sink's connection belongs to its durable outbox sender; triggers need the
opposite trade-off (handled at once, never stored: a trigger answered late is answered
wrong) and a JPEG is no outbox message, so both get a connection of their own, with the
same broker settings (TLS, credentials) and the client id ``<sink client id>-link``.

Topics: ``{base}/trigger`` (subscribed, QoS 1) and ``{base}/snapshot`` (the last NG picture,
``image/jpeg``, retained, QoS 0 — only the latest is worth anything).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from inspector.backoff import Backoff
from inspector.config import MqttConfig, StationConfig
from inspector.errors import InspectorError
from inspector.mqtt import Topics, default_client_id
from inspector.mqtt.connection import build_client, connect, is_v5

log = logging.getLogger(__name__)

TriggerHandler = Callable[[bytes, datetime], None]


class StationLink:
    """Subscribes ``.../trigger`` (when given a handler) and publishes ``.../snapshot``; reconnects with back-off."""

    def __init__(self, config: MqttConfig, station: StationConfig, *, on_trigger: TriggerHandler | None = None) -> None:
        self.config = config
        self.topics = Topics.for_station(config.topic_root, station)
        self.trigger_topic = f"{self.topics.base}/trigger"
        self.snapshot_topic = f"{self.topics.base}/snapshot"
        self.client_id = (config.client_id or default_client_id(station)) + "-link"
        self._on_trigger = on_trigger
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._accepted = False  # the broker accepted this connection (CONNACK): reset the back-off after it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mqtt-link[{self.client_id}]", daemon=True)
        self.triggers_received = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._thread.start()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def close(self) -> None:
        self._stop.set()
        client = self._client
        if client is not None:
            try:
                client.disconnect()
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self._thread.ident is not None:
            self._thread.join(5.0)

    def publish_snapshot(self, jpeg: bytes) -> bool:
        """The last NG picture, retained; False (not queued) while disconnected."""
        client = self._client
        if client is None or not self.connected:
            return False
        props = None
        if is_v5(self.config):
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = "image/jpeg"
        return client.publish(self.snapshot_topic, jpeg, 0, True, props).rc == mqtt.MQTT_ERR_SUCCESS

    # -- the connection thread -----------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff.from_policy(self.config.reconnect)
        while not self._stop.is_set():
            problem = "connection lost"
            try:
                client = build_client(self.config, self.client_id)
                client.on_connect = self._connected_cb
                client.on_disconnect = self._disconnected_cb
                client.on_message = self._message_cb
                connect(client, self.config)
                self._client = client
                client.loop_forever()  # returns when the connection ends (no paho auto-reconnect)
            except InspectorError as error:
                problem = error.problem
            except Exception:  # noqa: BLE001 - the link must outlive any one failure
                log.exception("station link %s failed", self.client_id)
            finally:
                self._client = None
                if self._accepted:  # the broker accepted us: the next failure starts afresh
                    self._accepted = False
                    backoff.reset()
                self._connected.clear()
            delay = backoff.next_delay()
            if not self._stop.is_set():
                log.warning("station link %s: %s; retrying in %.1f s", self.client_id, problem, delay)
            if self._stop.wait(delay):
                break

    def _connected_cb(self, client: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("station link %s refused by the broker: %s", self.client_id, reason)
            return
        if self._on_trigger is not None:
            client.subscribe(self.trigger_topic, qos=1)
        self._accepted = True
        self._connected.set()
        log.info("station link %s connected%s", self.client_id,
                 f"; triggers on {self.trigger_topic}" if self._on_trigger else "")  # fmt: skip

    def _disconnected_cb(self, _c: mqtt.Client, _u: object, _f: object, _reason: object, _p: object) -> None:
        self._connected.clear()

    def _message_cb(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        received = datetime.now(UTC)  # first thing: frames captured after this instant are the part
        if message.topic != self.trigger_topic or self._on_trigger is None:
            return
        self.triggers_received += 1
        try:
            self._on_trigger(bytes(message.payload), received)
        except Exception:  # noqa: BLE001 - a faulty handler must not kill the network thread
            log.exception("trigger handler failed")

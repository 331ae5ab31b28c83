"""One network connection (``Link``): a fresh client, its CONNACK, its loss and its PUBACKs, for one owner thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from inspector.config import MqttConfig
from inspector.mqtt.connection.client import Will, build_client, connect
from inspector.mqtt.connection.diagnosis import PahoLog, closed_before_connack, explain_connack, no_connack

MessageHandler = Callable[[mqtt.Client, object, mqtt.MQTTMessage], None]


class Link:
    """One network connection: a fresh paho client and what its callbacks report.

    ``wake`` is notified on every event (CONNACK, loss, PUBACK) so one owner thread can wait
    for all of them at once; PUBACKs collect in ``acked`` (guarded by ``wake``).
    """

    def __init__(self, client: mqtt.Client, wake: threading.Condition, paho_log: PahoLog) -> None:
        self.client = client
        self.wake = wake
        self.paho_log = paho_log
        self.ready = threading.Event()  # CONNACK received, or the connection is gone
        self.connack: ReasonCode | None = None
        self.lost = False
        self.lost_reason: ReasonCode | None = None
        self.acked: list[tuple[int, ReasonCode]] = []  # guarded by wake
        client.on_connect, client.on_disconnect, client.on_publish = (
            self._on_connect, self._on_disconnect, self._on_publish,
        )  # fmt: skip

    @property
    def connected(self) -> bool:
        return self.connack is not None and not self.connack.is_failure and not self.lost

    @property
    def established(self) -> bool:
        """The broker accepted the connection at some point (it may be lost since)."""
        return self.connack is not None and not self.connack.is_failure

    def take_acks(self) -> tuple[list[tuple[int, ReasonCode]], bool]:
        """The PUBACKs received since the last call, and whether the connection is lost."""
        with self.wake:
            acks, self.acked = self.acked, []
            return acks, self.lost

    def close(self) -> None:
        """Disconnect (no Will) and stop the network thread; safe on a link that is already gone."""
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - the connection may already be gone
            pass
        self.client.loop_stop()

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        self.connack = reason
        self.ready.set()
        with self.wake:
            self.wake.notify_all()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        with self.wake:
            self.lost = True
            self.lost_reason = reason
            self.wake.notify_all()
        self.ready.set()

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, reason: ReasonCode, _p: object) -> None:
        with self.wake:
            self.acked.append((mid, reason))
            self.wake.notify_all()


def open_link(
    config: MqttConfig,
    client_id: str,
    *,
    wake: threading.Condition | None = None,
    will: Will | None = None,
    on_message: MessageHandler | None = None,
    stop: threading.Event | None = None,
) -> Link:
    """Connect a fresh single-use client and wait for the CONNACK (at most ``config.connect_timeout_s``).

    Raises MqttConnectError naming the cause (or InspectorError for a password file gone
    missing); on success the link's network thread runs until ``Link.close()``. A set
    ``stop`` event cuts the wait short.
    """
    paho_log = PahoLog()
    client = build_client(config, client_id, will=will, paho_log=paho_log)
    link = Link(client, wake or threading.Condition(), paho_log)
    if on_message is not None:
        client.on_message = on_message
    connect(client, config)
    client.loop_start()
    deadline = time.monotonic() + config.connect_timeout_s
    while not link.ready.wait(0.1):
        if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
            break
    if link.connected:
        return link
    link.close()
    if link.connack is not None and link.connack.is_failure:
        raise explain_connack(link.connack, config)
    if link.lost:
        raise closed_before_connack(config, paho_log)
    raise no_connack(config, config.connect_timeout_s)

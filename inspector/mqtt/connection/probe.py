"""A start-up check: connect once, wait for CONNACK, disconnect; a down broker may only warn."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from inspector.config import MqttConfig
from inspector.mqtt.connection.client import build_client, connect
from inspector.mqtt.connection.diagnosis import (
    MqttConnectError,
    PahoLog,
    closed_before_connack,
    explain_connack,
    no_connack,
)

log = logging.getLogger("inspector.mqtt.connection")


def check_connection(config: MqttConfig, timeout_s: float | None = None, *, client_id: str | None = None) -> None:
    """Connect once, wait for CONNACK, disconnect. Raises MqttConnectError naming the cause.

    For start-up checks: bad credentials or TLS trouble need a fix, a down broker may not.
    """
    timeout_s = config.connect_timeout_s if timeout_s is None else timeout_s
    config = config.model_copy(update={"connect_timeout_s": timeout_s})
    client_id = client_id or f"{config.client_id or 'inspector'}-check-{uuid.uuid4().hex[:8]}"
    paho_log = PahoLog()
    client = build_client(config, client_id, paho_log=paho_log)
    result: dict[str, object] = {}
    done = threading.Event()

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        result["connack"] = reason
        done.set()

    def on_disconnect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        result.setdefault("closed", reason)
        done.set()

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    connect(client, config)
    deadline = time.monotonic() + timeout_s
    try:
        while not done.is_set() and time.monotonic() < deadline:
            if client.loop(timeout=min(0.1, max(0.0, deadline - time.monotonic()))) != mqtt.MQTT_ERR_SUCCESS:
                break
        reason = result.get("connack")
        if isinstance(reason, ReasonCode):
            if reason.is_failure:
                raise explain_connack(reason, config)
            return
        if done.is_set() or result.get("closed") is not None or paho_log.errors:
            raise closed_before_connack(config, paho_log)
        raise no_connack(config, timeout_s)
    finally:
        if client.is_connected():
            client.disconnect()
            client.loop(timeout=0.05)
        sock = client.socket()
        if sock is not None:
            sock.close()


def check_connection_or_warn(
    config: MqttConfig,
    timeout_s: float | None = None,
    *,
    client_id: str | None = None,
    logger: logging.Logger = log,
) -> None:
    """``check_connection`` at start-up: bad credentials or TLS trust raise; a broker that is down only warns."""
    try:
        check_connection(config, timeout_s, client_id=client_id)
    except MqttConnectError as error:
        if not error.transient:
            raise
        logger.warning("MQTT broker not reachable yet; verdicts wait in the outbox: %s", error.problem)

"""A single-use paho client from ``MqttConfig`` (protocol, auth, TLS, Will) and the v5 message properties.

Every client is single-use (``reconnect_on_failure=False``): the MQTT sink opens a new
``Link`` per connection so that paho never re-sends its in-memory queue behind the outbox's
back. Passwords go to paho and nowhere else: never into a log line, an error or a repr.
"""

from __future__ import annotations

from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from inspector.config import MqttConfig
from inspector.mqtt.connection.credentials import resolve_password
from inspector.mqtt.connection.diagnosis import PahoLog, explain_exception
from inspector.mqtt.connection.tls import tls_context

CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True
    properties: Properties | None = None


def is_v5(config: MqttConfig) -> bool:
    return config.protocol == "5"

def build_client(
    config: MqttConfig, client_id: str, *, will: Will | None = None, paho_log: PahoLog | None = None
) -> mqtt.Client:
    """A configured, not yet connected, single-use paho client."""
    v5 = is_v5(config)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        reconnect_on_failure=False,
        # v3.1.1: a clean session; v5 passes clean_start to connect(). The outbox, not the broker
        # session, is what makes our publishes durable, and stale commands must not pile up.
        **({} if v5 else {"clean_session": True}),
    )
    client.enable_logger(paho_log or PahoLog())  # type: ignore[arg-type]  # paho only calls .log()
    client.connect_timeout = config.connect_timeout_s
    client.max_inflight_messages_set(config.max_inflight)
    password = resolve_password(config)
    if config.username is not None or password is not None:
        client.username_pw_set(config.username, password)
    if config.tls is not None:
        client.tls_set_context(tls_context(config.tls))
    if will is not None:
        client.will_set(will.topic, will.payload, will.qos, will.retain, will.properties if v5 else None)
    return client


def connect(client: mqtt.Client, config: MqttConfig) -> None:
    """Open the TCP (and TLS) connection and send CONNECT; raises MqttConnectError. CONNACK comes later."""
    try:
        if is_v5(config):
            client.connect(config.host, config.port, config.keepalive_s, clean_start=True)
        else:
            client.connect(config.host, config.port, config.keepalive_s)
    except Exception as error:  # paho surfaces socket, TLS and value errors from connect()
        raise explain_exception(error, config) from error


def message_properties(
    config: MqttConfig, *, schema: str, schema_version: str, message_id: str, expiry_s: int | None = None
) -> Properties | None:
    """v5 PUBLISH properties: JSON content type, schema and message id as user properties, optional expiry."""
    if not is_v5(config):
        return None
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = CONTENT_TYPE
    props.UserProperty = [("schema", schema), ("schema-version", schema_version), ("message-id", message_id)]
    if expiry_s is not None:
        props.MessageExpiryInterval = expiry_s
    return props

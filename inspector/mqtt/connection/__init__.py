"""The broker connection: client (TLS, auth), one link per connection, diagnosis of failures, start-up check.

- ``client``: a single-use paho client from ``MqttConfig``, v5 message properties;
- ``credentials`` / ``tls``: the password (config, environment, file) and the TLS context;
- ``link``: ``Link`` / ``open_link``, one connection and what its callbacks report;
- ``diagnosis``: ``MqttConnectError`` sentences naming the cause and the fix;
- ``probe``: ``check_connection`` at start-up.

Reconnect delays are ``inspector.backoff.Backoff`` (shared with the live sources).
"""

from inspector.mqtt.connection.client import CONTENT_TYPE, Will, build_client, connect, is_v5, message_properties
from inspector.mqtt.connection.credentials import resolve_password
from inspector.mqtt.connection.diagnosis import TRANSIENT, ConnectCause, MqttConnectError, PahoLog
from inspector.mqtt.connection.link import Link, MessageHandler, open_link
from inspector.mqtt.connection.probe import check_connection, check_connection_or_warn
from inspector.mqtt.connection.tls import tls_context

__all__ = [
    "CONTENT_TYPE",
    "TRANSIENT",
    "ConnectCause",
    "Link",
    "MessageHandler",
    "MqttConnectError",
    "PahoLog",
    "Will",
    "build_client",
    "check_connection",
    "check_connection_or_warn",
    "connect",
    "is_v5",
    "message_properties",
    "open_link",
    "resolve_password",
    "tls_context",
]

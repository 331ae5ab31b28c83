"""MQTT, by concern.

- ``connection``: a paho client from MqttConfig (TLS, auth), one ``Link`` per connection,
  reconnect back-off, failures as ``MqttConnectError`` sentences; ``url``: ``mqtt[s]://`` URLs.
- ``outbox`` + ``sender``: verdicts and rejects, durable on disk, delivered at least once.
- ``channel``: the station's status (birth and Will), health heartbeats, commands and responses.
- ``sink``: ``MqttSink``, the Sink that runs all of it on one sender thread.
- ``topics``: the ISA-95 style topic tree. ``inspector watch`` uses ``connection`` too.

The payloads themselves live in inspector/payloads/.
"""

from inspector.mqtt.channel import Command
from inspector.mqtt.connection import MqttConnectError, check_connection
from inspector.mqtt.sink import MqttSink, default_client_id
from inspector.mqtt.topics import Topics
from inspector.mqtt.url import mqtt_config_from_url, redact_url

__all__ = [
    "Command",
    "MqttConnectError",
    "MqttSink",
    "Topics",
    "check_connection",
    "default_client_id",
    "mqtt_config_from_url",
    "redact_url",
]

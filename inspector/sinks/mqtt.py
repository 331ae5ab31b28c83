"""The MQTT sink, reachable beside the JSONL one; it lives in inspector/mqtt/ (connection, outbox sender, channel)."""

from inspector.mqtt import Command, MqttSink, check_connection, default_client_id, mqtt_config_from_url

__all__ = ["Command", "MqttSink", "check_connection", "default_client_id", "mqtt_config_from_url"]

"""Broker URLs never weaken the configured security: no silent TLS downgrade; passwords in URLs are warned about."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from inspector.config import MqttConfig, MqttTLSConfig
from inspector.errors import InspectorError
from inspector.mqtt.url import mqtt_config_from_url


def _tls_base(tmp_path: Path) -> MqttConfig:
    return MqttConfig(username="line", password_file=tmp_path / "pw", tls=MqttTLSConfig(ca_file=tmp_path / "ca.pem"))


@pytest.mark.parametrize("url", ["mqtt://broker", "mqtt://broker:1883", "MQTT://line@broker/acme"])
def test_a_plain_url_over_a_tls_config_is_refused(tmp_path: Path, url: str) -> None:
    """Before the fix the URL silently dropped TLS: the password went to the broker in clear."""
    with pytest.raises(InspectorError) as raised:
        mqtt_config_from_url(url, _tls_base(tmp_path))
    text = str(raised.value)
    assert "plain TCP" in text and "sinks.mqtt.tls" in text and "in clear" in text
    assert "mqtts://broker:8883" in text  # the fix, spelled out


def test_the_tls_url_keeps_the_configured_tls(tmp_path: Path) -> None:
    base = _tls_base(tmp_path)
    config = mqtt_config_from_url("mqtts://broker", base)
    assert config.tls == base.tls and config.password_file == base.password_file


def test_a_plain_url_over_a_plain_config_is_plain(tmp_path: Path) -> None:
    assert mqtt_config_from_url("mqtt://broker", MqttConfig(outbox=tmp_path / "o.sqlite")).tls is None


def test_a_password_in_the_url_is_warned_about_without_showing_it(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="inspector.mqtt.url"):
        config = mqtt_config_from_url("mqtt://line:hunter2-secret@broker")
    assert config.password == "hunter2-secret"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "process list" in warned and "password_file" in warned
    assert "hunter2-secret" not in warned and "line:***@broker" in warned


def test_no_warning_without_a_password(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="inspector.mqtt.url"):
        mqtt_config_from_url("mqtt://line@broker")
    assert not caplog.records

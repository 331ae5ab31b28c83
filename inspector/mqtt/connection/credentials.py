"""The broker password: from the config, an environment variable or a file; it goes to paho and nowhere else."""

from __future__ import annotations

import os

from inspector.config import MqttConfig
from inspector.errors import InspectorError


def resolve_password(config: MqttConfig) -> str | None:
    """The password from the config, its environment variable or its file (trailing newline removed)."""
    if config.password is not None:
        return config.password
    if config.password_env is not None:
        value = os.environ.get(config.password_env)
        if value is None:
            raise InspectorError(
                f"environment variable {config.password_env} (sinks.mqtt.password_env) is not set",
                "export it before starting, or use password_file",
            )
        return value
    if config.password_file is not None:
        try:
            value = config.password_file.read_text(encoding="utf-8")
        except OSError as error:
            raise InspectorError(
                f"cannot read the MQTT password file {config.password_file}: {error.strerror}",
                "check sinks.mqtt.password_file and its permissions",
            ) from None
        value = value.removesuffix("\n").removesuffix("\r")
        if not value:
            raise InspectorError(f"the MQTT password file {config.password_file} is empty")
        return value
    return None

"""``mqtt://[user[:pass]@]host[:port][/topic/root]`` and ``mqtts://...`` -> MqttConfig.

The URL overrides the broker address (and the credentials and topic root when it gives
them); everything else (outbox, TLS files, bounds) comes from ``base``, usually the
station file's ``sinks.mqtt``. ``mqtts`` means TLS: the system CAs unless ``base`` names a CA.

``mqtt://`` over a ``base`` that configures TLS is refused: it would silently connect in
plain TCP and send the username and password in clear. A password written in the URL is
accepted but warned about: command lines show in ``ps`` and in shell history, so prefer
``sinks.mqtt.password_file`` (or ``password_env``).
"""

from __future__ import annotations

import logging
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from inspector.config import MqttConfig, MqttTLSConfig, format_validation_error
from inspector.errors import ConfigError, InspectorError

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_FORM = "mqtt://[user[:password]@]host[:port][/topic/root] or mqtts://..."

log = logging.getLogger(__name__)


def mqtt_config_from_url(url: str, base: MqttConfig | None = None) -> MqttConfig:
    """Broker settings from a URL on top of ``base``; raises InspectorError naming what is wrong."""
    shown = redact_url(url)
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        got = f"got '{parts.scheme}://'" if "://" in url else "no scheme given"
        raise InspectorError(f"MQTT URL {shown!r} must start with mqtt:// or mqtts:// ({got})", f"use {_FORM}")
    try:
        port = parts.port
    except ValueError:
        raise InspectorError(f"MQTT URL {shown!r} has an invalid port", "a port is a number from 1 to 65535") from None
    if not parts.hostname:
        raise InspectorError(f"MQTT URL {shown!r} names no host", f"use {_FORM}")
    if "?" in url or "#" in url:  # also catches an empty fragment, e.g. a wildcard topic root 'a/#'
        raise InspectorError(
            f"MQTT URL {shown!r} has a '?' or '#': no query, fragment or wildcard is allowed", f"use {_FORM}"
        )

    base = base or MqttConfig()
    update: dict[str, object] = {"host": parts.hostname, "port": port or _DEFAULT_PORTS[scheme]}
    if scheme == "mqtts":
        update["tls"] = base.tls or MqttTLSConfig()
    elif base.tls is not None:
        # Never downgrade silently: plain TCP would carry the credentials and verdicts in clear.
        tls_port = _DEFAULT_PORTS["mqtts"] if port in (None, _DEFAULT_PORTS["mqtt"]) else port
        raise InspectorError(
            f"MQTT URL {shown!r} is plain TCP (mqtt://) but the config sets sinks.mqtt.tls: "
            "connecting would drop TLS and send the credentials in clear",
            f"use mqtts://{parts.hostname}:{tls_port} (TLS), or remove sinks.mqtt.tls "
            "from the config if this broker really is plain TCP",
        )
    else:
        update["tls"] = None
    if parts.username is not None:
        update["username"] = unquote(parts.username)
        if parts.password is not None:
            log.warning(
                "the MQTT URL %s carries a password: command lines show in the process list (ps) and in "
                "shell history; prefer sinks.mqtt.password_file (or password_env) and a URL without it",
                shown,
            )
            update.update(password=unquote(parts.password), password_env=None, password_file=None)
    root = parts.path.strip("/")
    if root:
        update["topic_root"] = unquote(root)
    data = base.model_dump()
    data.update(update)
    try:
        return MqttConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(f"MQTT URL {shown!r}", error), f"use {_FORM}") from None


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, fit for logs and error messages."""
    parts = urlsplit(url.strip())
    if parts.password is None:
        return url.strip()
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()

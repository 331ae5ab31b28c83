"""Why a connection failed, as a sentence naming the cause and the fix (``MqttConnectError``)."""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections import deque
from typing import Literal

from paho.mqtt.reasoncodes import ReasonCode

from inspector.config import MqttConfig
from inspector.errors import InspectorError

_paho_log = logging.getLogger("inspector.mqtt.paho")

ConnectCause = Literal["refused", "unreachable", "timeout", "dns", "tls", "auth", "not_authorized", "closed", "broker"]
# Causes that a retry may cure by itself; the others need a configuration change.
TRANSIENT: frozenset[str] = frozenset({"refused", "unreachable", "timeout", "dns", "closed", "broker"})

class MqttConnectError(InspectorError):
    """The broker could not be reached or refused us; ``cause`` says which, ``transient`` whether to retry."""

    def __init__(self, problem: str, hint: str | None = None, *, cause: ConnectCause) -> None:
        super().__init__(problem, hint)
        self.cause = cause

    @property
    def transient(self) -> bool:
        return self.cause in TRANSIENT


class PahoLog:
    """paho's log lines at DEBUG (its ERROR lines would repeat ours), keeping the last errors for explanations."""

    def __init__(self) -> None:
        self.errors: deque[str] = deque(maxlen=5)

    def log(self, level: int, message: str, *args: object) -> None:
        if level >= logging.ERROR:
            self.errors.append(message % args if args else message)
        if _paho_log.isEnabledFor(logging.DEBUG):
            _paho_log.debug(message, *args)

def _where(config: MqttConfig) -> str:
    return f"{'mqtts' if config.tls else 'mqtt'}://{config.host}:{config.port}"


def explain_exception(error: BaseException, config: MqttConfig) -> MqttConnectError:
    """An exception from connecting, as a sentence naming the cause and the fix."""
    where = _where(config)
    if isinstance(error, MqttConnectError):
        return error
    if isinstance(error, ssl.SSLCertVerificationError):
        message = error.verify_message or str(error)
        if "mismatch" in message.lower():
            return MqttConnectError(
                f"TLS certificate verification failed for {where}: {message}",
                "connect with a host name the broker certificate lists, "
                "or set sinks.mqtt.tls.verify_hostname: false (tests only)",
                cause="tls",
            )
        ca = config.tls.ca_file if config.tls and config.tls.ca_file else "the system CA store"
        return MqttConnectError(
            f"TLS certificate verification failed for {where}: {message} (trusted CA: {ca})",
            "point sinks.mqtt.tls.ca_file at the CA that signed the broker's certificate",
            cause="tls",
        )
    if isinstance(error, ssl.SSLError):
        reason = error.reason or str(error)
        if "CERTIFICATE_REQUIRED" in reason.upper():
            hint = "the broker wants a client certificate: set sinks.mqtt.tls.cert_file and key_file"
        else:
            hint = "is this a TLS port? plain MQTT (mqtt://) is usually port 1883, TLS (mqtts://) 8883"
        return MqttConnectError(f"TLS handshake with {where} failed: {reason}", hint, cause="tls")
    if isinstance(error, ConnectionResetError) and config.tls is not None:
        return MqttConnectError(
            f"TLS handshake with {where} failed: the broker reset the connection",
            "is this a TLS port? plain MQTT (mqtt://) is usually port 1883, TLS (mqtts://) 8883",
            cause="tls",
        )
    if isinstance(error, ConnectionRefusedError):
        return MqttConnectError(
            f"connection refused by {where}: no MQTT broker listens there",
            "start the broker, or fix the host and port (sinks.mqtt or the URL)",
            cause="refused",
        )
    if isinstance(error, socket.gaierror):
        return MqttConnectError(
            f"cannot resolve the MQTT broker host {config.host!r}: {error.strerror}",
            "check the host name, or use an IP address",
            cause="dns",
        )
    if isinstance(error, (TimeoutError, socket.timeout)):
        return MqttConnectError(
            f"no answer from {where} within {config.connect_timeout_s:g} s: host unreachable or port filtered",
            "check the address, the network route and firewalls",
            cause="timeout",
        )
    if isinstance(error, OSError) and error.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        return MqttConnectError(
            f"{where} is unreachable: {error.strerror}", "check the address and the network route", cause="unreachable"
        )
    if isinstance(error, (ConnectionError, OSError)):
        return MqttConnectError(f"connection to {where} failed: {error}", None, cause="closed")
    return MqttConnectError(f"cannot connect to {where}: {type(error).__name__}: {error}", None, cause="broker")


def explain_connack(reason: ReasonCode, config: MqttConfig) -> MqttConnectError:
    """A refused CONNACK (v5 reason code, or the v3.1.1 return code paho maps onto one)."""
    where = _where(config)
    user = f"user {config.username!r}" if config.username else "no username (anonymous)"
    value = reason.value
    if value == 134:  # Bad user name or password (v3.1.1: 4)
        return MqttConnectError(
            f"{where} rejected the credentials: bad user name or password ({user})",
            "check sinks.mqtt.username and the password (password, password_env or password_file)",
            cause="auth",
        )
    if value == 135:  # Not authorized (v3.1.1: 5)
        # Mosquitto answers a wrong password with this code too, not with 134.
        return MqttConnectError(
            f"{where} rejected the login: not authorised ({user}): wrong password, unknown user, "
            "or this user may not connect",
            "check sinks.mqtt.username and the password (password, password_env or password_file), "
            "and the broker's ACL",
            cause="not_authorized",
        )
    if value == 138:
        return MqttConnectError(f"{where} refused the connection: this client is banned", None, cause="not_authorized")
    if value == 133:
        return MqttConnectError(
            f"{where} refused the client id: {reason}", "set sinks.mqtt.client_id to a plain ASCII id", cause="broker"
        )
    if value in (132, 1):
        return MqttConnectError(
            f"{where} does not support the requested MQTT protocol version",
            "set sinks.mqtt.protocol: '3.1.1'",
            cause="broker",
        )
    return MqttConnectError(f"{where} refused the connection: {reason} (reason code {value})", None, cause="broker")


def closed_before_connack(config: MqttConfig, paho_log: PahoLog) -> MqttConnectError:
    """The broker hung up between CONNECT and CONNACK: usually TLS or a client certificate it insists on."""
    detail = f": {paho_log.errors[-1]}" if paho_log.errors else ""
    if config.tls is None:
        hint = "the broker may require TLS: use mqtts:// (usually port 8883) and sinks.mqtt.tls"
    elif config.tls.cert_file is None:
        hint = "the broker may require a client certificate: set sinks.mqtt.tls.cert_file and key_file"
    else:
        hint = "the broker log says why it dropped the connection (certificate not trusted? ACL?)"
    return MqttConnectError(f"{_where(config)} closed the connection before accepting it{detail}", hint, cause="closed")


def no_connack(config: MqttConfig, timeout_s: float) -> MqttConnectError:
    return MqttConnectError(
        f"{_where(config)} accepted the TCP connection but sent no MQTT CONNACK within {timeout_s:g} s",
        "is it an MQTT broker? a TLS port needs mqtts://",
        cause="timeout",
    )

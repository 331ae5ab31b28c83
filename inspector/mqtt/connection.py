"""The broker connection: a paho client from MqttConfig (TLS, auth), one link per connection, reconnect back-off.

Every client here is single-use (``reconnect_on_failure=False``): the MQTT sink opens a new
``Link`` per connection so that paho never re-sends its in-memory queue behind the outbox's
back; ``inspector watch`` opens its links the same way. Connection failures become
``MqttConnectError`` sentences naming the cause and the fix. Passwords go to paho and
nowhere else: never into a log line, an error or a repr.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from inspector.config import MqttConfig, MqttTLSConfig, ReconnectConfig
from inspector.errors import InspectorError

log = logging.getLogger(__name__)
_paho_log = logging.getLogger("inspector.mqtt.paho")

ConnectCause = Literal["refused", "unreachable", "timeout", "dns", "tls", "auth", "not_authorized", "closed", "broker"]
# Causes that a retry may cure by itself; the others need a configuration change.
TRANSIENT: frozenset[str] = frozenset({"refused", "unreachable", "timeout", "dns", "closed", "broker"})

CONTENT_TYPE = "application/json"


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


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True
    properties: Properties | None = None


def is_v5(config: MqttConfig) -> bool:
    return config.protocol == "5"


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


def tls_context(tls: MqttTLSConfig) -> ssl.SSLContext:
    """A client TLS context: the given CA (else the system CAs), optional client certificate."""
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, name)
        if path is not None and not path.is_file():
            raise InspectorError(f"sinks.mqtt.tls.{name} {path} does not exist", "give the path of a PEM file")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None)
    except ssl.SSLError as error:
        raise InspectorError(f"sinks.mqtt.tls.ca_file {tls.ca_file} is not a PEM CA certificate: {error}") from None
    context.check_hostname = tls.verify_hostname
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        except ssl.SSLError as error:
            raise InspectorError(
                f"cannot load the client certificate {tls.cert_file} / key {tls.key_file}: {error.reason or error}",
                "both must be PEM, the key unencrypted and matching the certificate",
            ) from None
    return context


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


class Backoff:
    """Reconnect delays: ``initial_s``, doubling up to ``max_s``; ``reset()`` after a connection that held."""

    def __init__(self, policy: ReconnectConfig) -> None:
        self.policy = policy
        self._delay = policy.initial_s

    def next_delay(self) -> float:
        delay = self._delay
        self._delay = min(delay * 2, self.policy.max_s)
        return delay

    def reset(self) -> None:
        self._delay = self.policy.initial_s

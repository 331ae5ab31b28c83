"""The Sparkplug B 3.0 edge node: one per box, a device per station, beside the plain MQTT payloads.

Topics: ``spBv1.0/<group>/<TYPE>/<edge node>[/<device>]``. Per connection:

- CONNECT carries the NDEATH Will (QoS 1, not retained) with ``bdSeq``; bdSeq goes up by one
  per CONNECT (0-255, kept in ``bdseq_file`` across restarts), and the NBIRTH of that
  connection carries the same bdSeq, so a host matches a death to its birth;
- NBIRTH (seq 0, every node metric) then a DBIRTH per station (every device metric);
- a DDATA per verdict; NDATA/DDATA when a command changed something; seq +1 per message,
  wrapping at 256; a clean stop publishes the NDEATH itself before disconnecting.

Commands: NCMD ``Node Control/Rebirth`` = true births everything again; DCMD ``Recipe/Selected``
(String) selects a recipe, ``Status/Paused`` (Boolean) pauses/resumes, ``Device Control/Rebirth``
births the device again. A command that cannot be carried out is answered by the
``.../Command Error`` metric (NDATA or DDATA) naming the problem; a good one clears it.

Sparkplug messages are QoS 0 (the specification's rule): a verdict that finds the node
disconnected is not delivered here (it is counted); the durable path is the plain MQTT outbox.
With ``primary_host_id`` the births wait until that host's ``spBv1.0/STATE/<id>`` says online.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge.commands import CommandRejected
from edge.sparkplug import metrics as spm
from edge.station_control import StationControl
from inspector.config import MqttConfig
from inspector.errors import InspectorError
from inspector.mqtt.connection import Will, build_client, connect
from inspector.payloads.verdict import FrameVerdict
from inspector.plc_config import SparkplugConfig

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
_POLL_S = 0.5


def sparkplug_id(value: str) -> str:
    """A host or station name made fit for a Sparkplug topic level."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in value)[:64] or "edge"


def read_bd_seq(path: Path) -> int:
    """The bdSeq of the next CONNECT (0 when the file is missing or unreadable)."""
    try:
        return int(path.read_text(encoding="ascii").strip()) % 256
    except (OSError, ValueError):
        return 0


def write_bd_seq(path: Path, value: int) -> None:
    """Store atomically: a crash mid-write must not reset bdSeq to 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(f"{value % 256}\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class _Device:
    station: StationControl
    last: FrameVerdict | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"OK": 0, "NG": 0, "UNCERTAIN": 0})
    published_state: list[spm.Metric] = field(default_factory=list)


class SparkplugNode:
    """The box's edge node. ``add_device`` per station before ``start``; ``close`` at shutdown."""

    def __init__(self, settings: SparkplugConfig, mqtt_config: MqttConfig, *, software: str = "line-inspector") -> None:
        self.settings = settings
        self.mqtt_config = mqtt_config
        self.group = settings.group_id
        self.node_id = settings.edge_node_id or sparkplug_id(socket.gethostname())
        self.client_id = f"{self.group}-{self.node_id}-sparkplug"
        self.software = software
        self._devices: dict[str, _Device] = {}
        self._lock = threading.RLock()  # seq order and the births' consistency
        self._seq = 0
        self.bd_seq: int | None = None  # of the current connection
        self._client: mqtt.Client | None = None
        self._born = threading.Event()
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sparkplug[{self.node_id}]", daemon=True)
        self.undelivered = 0  # verdicts that found the node not born (QoS 0: not stored)
        self.command_errors = 0

    # -- topics --------------------------------------------------------------------------------

    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"{NAMESPACE}/{self.group}/{kind}/{self.node_id}"
        return f"{base}/{device}" if device is not None else base

    # -- set-up and shutdown -------------------------------------------------------------------

    def station_sink(self, name: str) -> SparkplugDeviceSink:
        """The Sink feeding DDATA with station ``name``'s verdicts; ``attach`` its control before ``start``."""
        return SparkplugDeviceSink(self, sparkplug_id(name))

    def attach(self, station: StationControl) -> None:
        """Make ``station`` a device of this node (device id: its name, made fit for a topic level)."""
        device = sparkplug_id(station.name)
        if device in self._devices:
            raise InspectorError(f"two stations map to the Sparkplug device id {device!r}", "give them distinct names")
        self._devices[device] = _Device(station)

    def add_device(self, station: StationControl) -> SparkplugDeviceSink:
        """``attach`` and ``station_sink`` in one step."""
        self.attach(station)
        return self.station_sink(station.name)

    @property
    def devices(self) -> list[str]:
        return list(self._devices)

    def start(self) -> None:
        self._thread.start()

    def wait_born(self, timeout_s: float) -> bool:
        return self._born.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Publish NDEATH ourselves (a clean DISCONNECT sends no Will), then disconnect."""
        client = self._client
        if client is not None and self._born.is_set():  # before the stop: the thread disconnects on it
            self._born.clear()  # no data after the death
            info = client.publish(self.topic("NDEATH"), self._death_payload(), qos=1)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                log.warning("sparkplug: NDEATH not acknowledged before the disconnect")
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout_s + 2.0)

    # -- verdicts (the device sinks call these from the publish worker) ------------------------

    def device_data(self, device: str, verdict: FrameVerdict) -> None:
        entry = self._devices.get(device)
        if entry is None:  # a sink whose station was never attached: a wiring bug, said once per verdict
            log.error("sparkplug: verdict for device %s, which is not attached", device)
            return
        with self._lock:
            entry.last = verdict
            entry.counts[verdict.verdict] = entry.counts.get(verdict.verdict, 0) + 1
            if not self._born.is_set():
                self.undelivered += 1
                return
            self._publish("DDATA", [*spm.verdict_metrics(verdict), *spm.count_metrics(entry.counts)], device)

    # -- the connection thread -----------------------------------------------------------------

    def _run(self) -> None:
        delay = self.mqtt_config.reconnect.initial_s
        while not self._stop.is_set():
            try:
                self._connect_once()
                delay = self.mqtt_config.reconnect.initial_s
                while not self._stop.wait(_POLL_S) and not self._lost.is_set():
                    self._publish_state_changes()
            except InspectorError as error:
                log.warning("sparkplug %s: %s; retrying in %.1f s", self.client_id, error.problem, delay)
            except Exception:  # noqa: BLE001 - the node must outlive any one failure
                log.exception("sparkplug %s failed; retrying", self.client_id)
            finally:
                self._drop_client()
            if self._stop.is_set() or self._stop.wait(delay):
                break
            delay = min(delay * 2, self.mqtt_config.reconnect.max_s)

    def _connect_once(self) -> None:
        path = self.settings.bdseq_file
        with self._lock:
            self.bd_seq = read_bd_seq(path)
            write_bd_seq(path, self.bd_seq + 1)  # before CONNECT: the next connection gets the next one
        will = Will(self.topic("NDEATH"), self._death_payload(), qos=1, retain=False)
        client = build_client(self.mqtt_config, self.client_id, will=will)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._lost.clear()
        self._client = client
        connect(client, self.mqtt_config)
        client.loop_start()

    def _drop_client(self) -> None:
        self._born.clear()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            except Exception:  # noqa: BLE001 - already gone
                pass
            client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("sparkplug %s refused by the broker: %s", self.client_id, reason)
            self._lost.set()
            return
        client.subscribe([(self.topic("NCMD"), 0), (self.topic("DCMD") + "/+", 0)])
        if self.settings.primary_host_id is not None:
            client.subscribe(f"{NAMESPACE}/STATE/{self.settings.primary_host_id}", qos=1)
            log.info("sparkplug: connected; births wait for host %s to be online", self.settings.primary_host_id)
            return
        self.rebirth()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        self._born.clear()
        self._lost.set()
        if not self._stop.is_set():
            log.warning("sparkplug %s: connection lost (%s)", self.client_id, reason)

    # -- births --------------------------------------------------------------------------------

    def rebirth(self) -> None:
        """NBIRTH (seq 0, the current bdSeq) then every DBIRTH."""
        with self._lock:
            if self._client is None or self.bd_seq is None:
                return
            self._seq = 0
            self._send("NBIRTH", spm.node_birth_metrics(self.bd_seq, self.software), None, seq=0)
            self._born.set()
            for device in self._devices:
                self._device_birth(device)
        log.info("sparkplug: born as %s (bdSeq %d, %d devices)", self.topic("NBIRTH"), self.bd_seq,
                 len(self._devices))  # fmt: skip

    def _device_birth(self, device: str) -> None:
        entry = self._devices[device]
        state = entry.station.line_state()
        with self._lock:
            entry.published_state = spm.state_metrics(state)
            self._publish("DBIRTH", spm.device_birth_metrics(state, entry.last, entry.counts), device)

    def _publish_state_changes(self) -> None:
        """DDATA for a device whose recipe, state or pause changed (by any protocol)."""
        if not self._born.is_set():
            return
        for device, entry in self._devices.items():
            current = spm.state_metrics(entry.station.line_state())
            with self._lock:
                changed = [m for m, old in zip(current, entry.published_state) if m != old]
                if changed or len(current) != len(entry.published_state):
                    entry.published_state = current
                    self._publish("DDATA", changed or current, device)

    # -- commands ------------------------------------------------------------------------------

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            if message.topic.startswith(f"{NAMESPACE}/STATE/"):
                self._on_host_state(bytes(message.payload))
            elif message.topic == self.topic("NCMD"):
                self._on_node_command(bytes(message.payload))
            elif message.topic.startswith(self.topic("DCMD") + "/"):
                self._on_device_command(message.topic.rsplit("/", 1)[1], bytes(message.payload))
        except Exception:  # noqa: BLE001 - a faulty command must not kill the network thread
            log.exception("sparkplug: handling %s failed", message.topic)

    def _on_host_state(self, payload: bytes) -> None:
        try:
            online = bool(json.loads(payload.decode("utf-8")).get("online"))
        except (ValueError, UnicodeDecodeError, AttributeError):
            log.warning('sparkplug: the host STATE message is not JSON {"online": ...}; ignored')
            return
        if online:
            self.rebirth()
        else:
            self._born.clear()
            log.warning("sparkplug: host %s is offline; no data until it is back", self.settings.primary_host_id)

    def _on_node_command(self, payload: bytes) -> None:
        try:
            for name, value in _command_metrics(payload):
                if name != "Node Control/Rebirth":
                    raise CommandRejected(f"NCMD: unknown metric {name[:64]!r}; writable: Node Control/Rebirth")
                if not isinstance(value, bool):
                    raise CommandRejected("NCMD: Node Control/Rebirth must be a Boolean")
                if value:
                    self.rebirth()
        except CommandRejected as error:
            self._command_error("NDATA", None, error.message)
            return
        self._command_error("NDATA", None, "")

    def _on_device_command(self, device: str, payload: bytes) -> None:
        entry = self._devices.get(device)
        if entry is None:
            known = ", ".join(self._devices) or "none"
            self._command_error("NDATA", None, f"DCMD for unknown device {device[:64]!r}; devices: {known}")
            return
        try:
            for name, value in _command_metrics(payload):
                self._apply_device_metric(entry.station, device, name, value)
        except CommandRejected as error:
            self._command_error("DDATA", device, error.message)
            return
        self._command_error("DDATA", device, "")
        self._publish_state_changes()

    def _apply_device_metric(self, station: StationControl, device: str, name: str, value: object) -> None:
        if name == "Recipe/Selected":
            if not isinstance(value, str):
                raise CommandRejected("DCMD: Recipe/Selected must be a String (a recipe id)")
            station.select_recipe(value)
        elif name == "Status/Paused":
            if not isinstance(value, bool):
                raise CommandRejected("DCMD: Status/Paused must be a Boolean")
            if value:
                station.pause()
            else:
                station.resume()
        elif name == "Device Control/Rebirth":
            if not isinstance(value, bool):
                raise CommandRejected("DCMD: Device Control/Rebirth must be a Boolean")
            if value:
                self._device_birth(device)
        else:
            raise CommandRejected(
                f"DCMD: unknown metric {name[:64]!r}; writable: Recipe/Selected, Status/Paused, Device Control/Rebirth"
            )

    def _command_error(self, kind: str, device: str | None, message: str) -> None:
        if message:
            self.command_errors += 1
            log.warning("sparkplug: %s", message)
        with self._lock:
            if self._born.is_set():
                name = "Device Control/Command Error" if device is not None else "Node Control/Command Error"
                self._publish(kind, [spm.Metric(name, spm.STRING, message)], device)

    # -- sending -------------------------------------------------------------------------------

    def _death_payload(self) -> bytes:
        return spm.encode([spm.Metric("bdSeq", spm.UINT64, self.bd_seq or 0)], seq=None)

    def _publish(self, kind: str, metrics: list[spm.Metric], device: str | None) -> None:
        """One message with the next seq (0-255, wrapping). Under the lock."""
        with self._lock:
            self._seq = (self._seq + 1) % 256
            self._send(kind, metrics, device, seq=self._seq)

    def _send(self, kind: str, metrics: list[spm.Metric], device: str | None, *, seq: int) -> None:
        client = self._client
        if client is None:
            return
        client.publish(self.topic(kind, device), spm.encode(metrics, seq=seq), qos=0, retain=False)


def _command_metrics(payload: bytes) -> list[tuple[str, object]]:
    """(name, value) of every metric of an NCMD/DCMD; CommandRejected for a malformed payload."""
    try:
        decoded = spm.decode(payload)
    except ValueError as error:
        raise CommandRejected(f"command payload: {error}") from None
    if not decoded.metrics:
        raise CommandRejected("command payload carries no metric")
    out = []
    for metric in decoded.metrics:
        if not metric.name:
            raise CommandRejected("command metric without a name (aliases are not used by this node)")
        out.append((metric.name, spm.metric_value(metric)))
    return out


class SparkplugDeviceSink:
    """A station's verdicts -> its device's DDATA (inspector/sinks/base.py ``Sink``)."""

    def __init__(self, node: SparkplugNode, device: str) -> None:
        self.node = node
        self.device = device

    def publish(self, verdict: FrameVerdict) -> None:
        self.node.device_data(self.device, verdict)

    def close(self, timeout_s: float = 5.0) -> None:
        """Nothing per device: the node's NDEATH (at ``SparkplugNode.close``) ends every device."""

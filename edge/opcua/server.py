"""The OPC UA server of the edge box (``asyncua``): one object per station, flat enough for a PLC.

Shaped on OPC 40100 (Machine Vision) where it fits — ResultId, PartId, RecipeId, JobId, the
StartSingleJob / SelectRecipe methods, a state named after the VisionStateMachine's — and flat
enough for a controller that only reads scalars, writes and calls methods (an S7-1500's "client
interfaces", TwinCAT TF6100). Address space (``ns`` = the index of ``opcua.namespace_uri``)::

    Objects/LineInspector                         ns=<ns>;s=LineInspector
      <station>                                   ns=<ns>;s=<station>
        Ready, Busy, Paused            Boolean    ns=<ns>;s=<station>.Ready ...
        VisionState                    String     Ready / SingleExecution / ContinuousExecution / Halted / Error
        LastResult                     String     OK / NG / UNCERTAIN ("" before the first)
        ResultId, PartId, LastRecipeId String     of the last result
        Confidence                     Double
        RecipeId                       String     the selected recipe; RecipeIds String[]
        ErrorCode (UInt32), ErrorMessage (String) edge/station_control.py ERROR_CODES
        CountOK, CountNG, CountUncertain UInt64;  Yield Double (OK / all)
        StartSingleJob(PartId String, RecipeId String = "") -> JobId String   (JobId = PartId)
        SelectRecipe(RecipeId String)
        Pause(), Resume()
      ResultReady events (ResultReadyEventType, emitted by the station object) with ResultId,
      PartId, RecipeId, Result, Confidence, Defects, Error, CaptureTime, Station.

Every variable is read-only (a write is answered BadNotWritable); a station is steered through
the methods, whose bad arguments are answered with status codes (edge/opcua/arguments.py).

The server runs its own asyncio loop on its own thread; verdicts reach it through
``OpcUaStationSink`` (the Sink protocol) and the station's state is polled every ``poll_s``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.node import Node

from edge.commands import CommandRejected
from edge.opcua.arguments import Refusal, check_part_id, check_recipe_id, string_arguments
from edge.opcua.users import PasswordUserManager, load_users
from edge.station_control import ERROR_CODES, LineState, StationControl, yield_ratio
from inspector.errors import InspectorError
from inspector.payloads.verdict import FrameVerdict
from inspector.plc_config import OpcUaConfig

log = logging.getLogger(__name__)

ROOT = "LineInspector"
EVENT_TYPE = "ResultReadyEventType"
_EVENT_FIELDS: list[tuple[str, int]] = [
    ("ResultId", ua.VariantType.String), ("PartId", ua.VariantType.String), ("RecipeId", ua.VariantType.String),
    ("Result", ua.VariantType.String), ("Confidence", ua.VariantType.Double), ("Defects", ua.VariantType.String),
    ("Error", ua.VariantType.String), ("CaptureTime", ua.VariantType.DateTime), ("Station", ua.VariantType.String),
]  # fmt: skip
# name -> (type, initial value)
_VARIABLES: dict[str, tuple[int, Any]] = {
    "Ready": (ua.VariantType.Boolean, False), "Busy": (ua.VariantType.Boolean, False),
    "Paused": (ua.VariantType.Boolean, False), "VisionState": (ua.VariantType.String, "Initialized"),
    "LastResult": (ua.VariantType.String, ""), "ResultId": (ua.VariantType.String, ""),
    "PartId": (ua.VariantType.String, ""), "LastRecipeId": (ua.VariantType.String, ""),
    "Confidence": (ua.VariantType.Double, 0.0), "RecipeId": (ua.VariantType.String, ""),
    "RecipeIds": (ua.VariantType.String, []), "ErrorCode": (ua.VariantType.UInt32, 0),
    "ErrorMessage": (ua.VariantType.String, ""), "CountOK": (ua.VariantType.UInt64, 0),
    "CountNG": (ua.VariantType.UInt64, 0), "CountUncertain": (ua.VariantType.UInt64, 0),
    "Yield": (ua.VariantType.Double, 0.0),
}  # fmt: skip
_POLICIES = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    "Aes128Sha256RsaOaep_SignAndEncrypt": ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
}


def vision_state(state: LineState) -> str:
    """The OPC 40100 VisionStateMachine state closest to the station's."""
    if state.paused:
        return "Halted"
    if state.error_code:
        return "Error"
    if state.busy:
        return "SingleExecution"
    return "Ready" if state.triggered else "ContinuousExecution"


@dataclass
class _Station:
    control: StationControl
    node: Node
    variables: dict[str, Node]
    events: Any  # asyncua EventGenerator
    counts: dict[str, int]
    shown: dict[str, Any]


class OpcUaServer:
    """Start it with every station (``add_station`` first), feed it verdicts, ``close`` it at shutdown."""

    def __init__(self, settings: OpcUaConfig, *, poll_s: float = 0.25) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self._controls: dict[str, StationControl] = {}
        self._stations: dict[str, _Station] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.namespace_index: int | None = None
        self.endpoint = f"opc.tcp://{settings.host}:{settings.port}"
        self.refused_calls = 0

    def station_sink(self, name: str) -> OpcUaStationSink:
        """The Sink for station ``name``'s verdicts; ``attach`` its control before ``start``."""
        return OpcUaStationSink(self, name)

    def attach(self, control: StationControl) -> None:
        """Serve ``control`` as the station object ``control.name``."""
        if control.name in self._controls:
            raise InspectorError(f"station {control.name!r} is already served over OPC UA")
        self._controls[control.name] = control

    def add_station(self, control: StationControl) -> OpcUaStationSink:
        """``attach`` and ``station_sink`` in one step (for a control that exists already)."""
        self.attach(control)
        return self.station_sink(control.name)

    # -- lifecycle (from the service's thread) -------------------------------------------------

    def start(self, timeout_s: float = 180.0) -> None:
        """Serve; raises InspectorError (a port in use, an unreadable certificate) before returning.

        asyncua builds the standard address space first: seconds on an idle core, tens of them on a busy box.
        """
        self._thread = threading.Thread(target=self._thread_main, name="opcua", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise InspectorError(f"the OPC UA server did not start within {timeout_s:g} s")
        if self._failure is not None:
            failure = self._failure
            if isinstance(failure, InspectorError):
                raise failure
            raise InspectorError(
                f"the OPC UA server cannot serve {self.endpoint}: {type(failure).__name__}: {failure}",
                "check edge.opcua (host, port, certificate_file, private_key_file)",
            )
        log.info("OPC UA server on %s (namespace %s = ns=%s)", self.endpoint, self.settings.namespace_uri,
                 self.namespace_index)  # fmt: skip

    def close(self, timeout_s: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def publish(self, station: str, verdict: FrameVerdict) -> None:
        """A station's verdict (any thread): variables updated, ResultReady emitted, in order."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._on_verdict(station, verdict), loop)

    # -- the server's thread -------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as error:  # noqa: BLE001 - reported to start() or logged
            if not self._started.is_set():
                self._failure = error
                self._started.set()
            else:
                log.exception("the OPC UA server stopped")
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await self._build()
        try:
            async with server:
                self._started.set()
                while not self._stop.is_set():
                    for station in self._stations.values():
                        await self._refresh(station)
                    try:
                        await asyncio.wait_for(self._stop.wait(), self.poll_s)
                    except TimeoutError:
                        pass
        except OSError as error:
            raise InspectorError(
                f"the OPC UA server cannot listen on {self.endpoint}: {error.strerror or error}",
                "pick a free edge.opcua.port (or stop the other server)",
            ) from None

    async def _build(self) -> Server:
        settings = self.settings
        server = Server(user_manager=PasswordUserManager(load_users(settings.users_file)))
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(settings.server_name)
        server.set_security_policy([_POLICIES[name] for name in settings.security_policies])
        tokens: list[type] = [ua.UserNameIdentityToken]
        if settings.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        if settings.certificate_file is not None and settings.private_key_file is not None:
            await _load_keys(server, settings.certificate_file, settings.private_key_file)
        if settings.trusted_clients_dir is not None:
            await _trust_only(server, settings.trusted_clients_dir)
        idx = await server.register_namespace(settings.namespace_uri)
        self.namespace_index = idx
        etype = await server.create_custom_event_type(idx, EVENT_TYPE, ua.ObjectIds.BaseEventType, _EVENT_FIELDS)
        root = await server.nodes.objects.add_object(ua.NodeId(ROOT, idx), ua.QualifiedName(ROOT, idx))
        for name, control in self._controls.items():
            self._stations[name] = await self._add_station(server, root, idx, etype, control)
        return server

    async def _add_station(
        self, server: Server, root: Node, idx: int, etype: Node, control: StationControl
    ) -> _Station:
        name = control.name
        node = await root.add_object(ua.NodeId(name, idx), ua.QualifiedName(name, idx))
        variables = {}
        for var, (kind, initial) in _VARIABLES.items():
            variables[var] = await node.add_variable(
                ua.NodeId(f"{name}.{var}", idx), ua.QualifiedName(var, idx), ua.Variant(initial, kind)
            )
        methods = {
            "StartSingleJob": (
                self._start_single_job,
                [_argument("PartId", "the part in front of the camera"),
                 _argument("RecipeId", "recipe for this part; empty: the selected one")],
                [_argument("JobId", "the job's id (the part id): the ResultReady event carries it")],
            ),
            "SelectRecipe": (self._select_recipe, [_argument("RecipeId", "a recipe id of the station config")], []),
            "Pause": (self._pause, [], []),
            "Resume": (self._resume, [], []),
        }  # fmt: skip
        for method, (handler, inputs, outputs) in methods.items():
            await node.add_method(
                ua.NodeId(f"{name}.{method}", idx), ua.QualifiedName(method, idx), self._method(name, handler),
                inputs, outputs,
            )  # fmt: skip
        events = await server.get_event_generator(etype, node)
        await server.nodes.server.add_reference(node.nodeid, ua.ObjectIds.HasNotifier)  # Server-level subscribers too
        return _Station(control, node, variables, events, {"OK": 0, "NG": 0, "UNCERTAIN": 0}, {})

    # -- methods -------------------------------------------------------------------------------

    def _method(self, station: str, handler: Callable[[StationControl, list[ua.Variant]], Any]) -> Callable[..., Any]:
        async def call(_parent: ua.NodeId, *args: ua.Variant) -> Any:
            control = self._controls[station]
            loop = asyncio.get_running_loop()
            try:
                # The station's own locks, not the server's loop, decide how long it takes.
                outputs = await loop.run_in_executor(None, handler, control, list(args))
            except Refusal as refusal:
                self.refused_calls += 1
                log.warning("OPC UA %s: %s (%s)", station, refusal.message, ua.StatusCode(refusal.code).name)
                return refusal.result(len(args))
            await self._refresh(self._stations[station])
            return outputs

        return call

    def _start_single_job(self, control: StationControl, args: list[ua.Variant]) -> list[ua.Variant]:
        part_id, recipe_id = string_arguments("StartSingleJob", args, ["PartId", "RecipeId"], required=1)
        assert part_id is not None
        check_part_id("StartSingleJob", part_id)
        if recipe_id is not None:
            check_recipe_id("StartSingleJob", recipe_id, 1)
        try:
            outcome = control.trigger_part(part_id, recipe_id)
        except CommandRejected as error:
            code = ua.StatusCodes.BadInvalidArgument if "recipe" in error.message else ua.StatusCodes.BadInvalidState
            raise Refusal(code, f"StartSingleJob: {error.message}", 1 if code == ua.StatusCodes.BadInvalidArgument
                          else None) from None  # fmt: skip
        if outcome == "duplicate":
            raise Refusal(ua.StatusCodes.BadInvalidState, f"StartSingleJob: part {part_id} was already triggered", 0)
        return [ua.Variant(part_id, ua.VariantType.String)]

    def _select_recipe(self, control: StationControl, args: list[ua.Variant]) -> list[ua.Variant]:
        (recipe_id,) = string_arguments("SelectRecipe", args, ["RecipeId"], required=1)
        assert recipe_id is not None
        check_recipe_id("SelectRecipe", recipe_id, 0)
        try:
            control.select_recipe(recipe_id)
        except CommandRejected as error:
            raise Refusal(ua.StatusCodes.BadInvalidArgument, f"SelectRecipe: {error.message}", 0) from None
        return []

    def _pause(self, control: StationControl, args: list[ua.Variant]) -> list[ua.Variant]:
        string_arguments("Pause", args, [], required=0)
        control.pause()
        return []

    def _resume(self, control: StationControl, args: list[ua.Variant]) -> list[ua.Variant]:
        string_arguments("Resume", args, [], required=0)
        control.resume()
        return []

    # -- values --------------------------------------------------------------------------------

    async def _on_verdict(self, name: str, verdict: FrameVerdict) -> None:
        station = self._stations.get(name)
        if station is None:
            return
        station.counts[verdict.verdict] = station.counts.get(verdict.verdict, 0) + 1
        values = {
            "LastResult": verdict.verdict, "ResultId": verdict.message_id, "PartId": verdict.source.part_id or "",
            "LastRecipeId": verdict.recipe or "", "Confidence": verdict.confidence,
            "CountOK": station.counts["OK"], "CountNG": station.counts["NG"],
            "CountUncertain": station.counts["UNCERTAIN"], "Yield": yield_ratio(station.counts),
        }  # fmt: skip
        await self._write(station, values)
        await self._refresh(station)  # Busy drops as the part's verdict arrives
        event = station.events.event
        event.ResultId, event.PartId = verdict.message_id, verdict.source.part_id or ""
        event.RecipeId, event.Result, event.Confidence = verdict.recipe or "", verdict.verdict, verdict.confidence
        event.Defects = ",".join(d.class_name for d in verdict.defects)
        event.Error, event.Station = verdict.error or "", name
        event.CaptureTime = verdict.source.captured_at.astimezone(UTC).replace(tzinfo=None)
        event.Severity = 700 if verdict.verdict == "NG" else 500 if verdict.verdict == "UNCERTAIN" else 100
        event.Message = ua.LocalizedText(f"{name}: {verdict.verdict} part {verdict.source.part_id or '-'}")
        await station.events.trigger(datetime.now(UTC).replace(tzinfo=None))

    async def _refresh(self, station: _Station) -> None:
        state = station.control.line_state()
        await self._write(station, {
            "Ready": state.ready, "Busy": state.busy, "Paused": state.paused, "VisionState": vision_state(state),
            "RecipeId": state.selected_recipe, "RecipeIds": list(state.recipes), "ErrorCode": state.error_code,
            "ErrorMessage": (state.reason or ERROR_CODES.get(state.error_code, "")) if state.error_code else "",
        })  # fmt: skip

    async def _write(self, station: _Station, values: dict[str, Any]) -> None:
        for name, value in values.items():
            if station.shown.get(name) == value:
                continue
            station.shown[name] = value
            await station.variables[name].write_value(ua.Variant(value, _VARIABLES[name][0]))


def _argument(name: str, description: str) -> ua.Argument:
    argument = ua.Argument()
    argument.Name = name
    argument.DataType = ua.NodeId(ua.ObjectIds.String)
    argument.ValueRank = -1
    argument.Description = ua.LocalizedText(description)
    return argument


async def _load_keys(server: Server, certificate: Path, key: Path) -> None:
    for label, path in (("certificate_file", certificate), ("private_key_file", key)):
        if not path.is_file():
            raise InspectorError(f"edge.opcua.{label} {path} does not exist", "see docs/opcua.md for making one")
    try:
        await server.load_certificate(str(certificate))
        await server.load_private_key(str(key))
    except Exception as error:  # noqa: BLE001 - cryptography raises several kinds
        raise InspectorError(
            f"edge.opcua: cannot load the certificate {certificate} / key {key}: {type(error).__name__}",
            "the certificate must be DER or PEM, the key PEM and unencrypted, and they must match",
        ) from None


async def _trust_only(server: Server, folder: Path) -> None:
    from asyncua.crypto.truststore import TrustStore
    from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

    if not folder.is_dir():
        raise InspectorError(f"edge.opcua.trusted_clients_dir {folder} is not a folder")
    store = TrustStore([folder], [])
    await store.load()
    options = CertificateValidatorOptions.TRUSTED | CertificateValidatorOptions.PEER_CLIENT
    server.set_certificate_validator(CertificateValidator(options, store))  # type: ignore[arg-type]


class OpcUaStationSink:
    """A station's verdicts -> its OPC UA variables and ResultReady events (the Sink protocol)."""

    def __init__(self, server: OpcUaServer, station: str) -> None:
        self.server = server
        self.station = station

    def publish(self, verdict: FrameVerdict) -> None:
        self.server.publish(self.station, verdict)

    def close(self, timeout_s: float = 5.0) -> None:
        """Nothing per station: the server closes once, after every station (``OpcUaServer.close``)."""

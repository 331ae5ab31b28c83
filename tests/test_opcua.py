"""The OPC UA server: a PLC-like client that only reads, writes and calls; a SCADA client that subscribes to
ResultReady events; wrong credentials; certificates; bad method arguments answered with status codes.

The station tests run the real edge service in process (real Mosquitto, the HTTP camera stand-in, the tiny
random model: its verdicts mean nothing, only that each part gets one with its id and recipe is checked).
The security tests serve a station object backed by a minimal StationControl: what they check is the
server's door, not inspection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edge_station import RunningService, Subscriber, build_service, config_for, station_data

pytest.importorskip("asyncua")
from asyncua import Client, ua  # noqa: E402
from asyncua.crypto import security_policies  # noqa: E402
from asyncua.crypto.cert_gen import setup_self_signed_certificate  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from edge.commands import CommandRejected  # noqa: E402
from edge.opcua.server import OpcUaServer  # noqa: E402
from edge.opcua.users import hash_password, verify_password  # noqa: E402
from edge.station_control import LineState  # noqa: E402
from inspector.plc_config import OpcUaConfig  # noqa: E402

from mosquitto import Mosquitto, free_port  # noqa: E402
from streams import MjpegCamera, noise_camera, poll  # noqa: E402

WAIT_S = 60.0
URI = "urn:line-inspector:machine-vision"
RECIPES = {"grey-tile": {"inspection": {"product": "a grey tile", "defects": {"chip": {"description": "a chip"}}}}}


def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "opcua-users"
    path.write_text(f"# line controllers\nplc1:{hash_password('s3cret', iterations=1000)}\n")
    return path


def plain_settings(tmp_path: Path, **extra: Any) -> OpcUaConfig:
    return OpcUaConfig(port=free_port(), security_policies=["None"], users_file=users_file(tmp_path), **extra)


def call(server: OpcUaServer, station: str, method: str, *args: Any) -> list[Any]:
    """One method call from a client that logs in as plc1; returns the outputs (UaStatusCodeError on refusal)."""

    async def run() -> Any:
        client = Client(server.endpoint)
        client.set_user("plc1")
        client.set_password("s3cret")
        async with client:
            idx = await client.get_namespace_index(URI)
            node = client.get_node(ua.NodeId(station, idx))
            return await node.call_method(ua.QualifiedName(method, idx), *args)

    return asyncio.run(run())


def refusal(server: OpcUaServer, station: str, method: str, *args: Any) -> str:
    with pytest.raises(ua.UaStatusCodeError) as caught:
        call(server, station, method, *args)
    return type(caught.value).__name__


# -- a running station, as a PLC and a SCADA client see it ------------------------------------------


@pytest.fixture
def camera() -> Iterator[MjpegCamera]:
    yield from noise_camera(3)


class PlcClient:
    """What an S7-1500 does: read scalars, write, call methods — no subscriptions, no structures."""

    def __init__(self, endpoint: str, station: str) -> None:
        self.endpoint = endpoint
        self.station = station

    async def __aenter__(self) -> PlcClient:
        self.client = Client(self.endpoint)
        self.client.set_user("plc1")
        self.client.set_password("s3cret")
        await self.client.connect()
        self.idx = await self.client.get_namespace_index(URI)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.disconnect()

    async def read(self, name: str) -> Any:
        return await self.client.get_node(ua.NodeId(f"{self.station}.{name}", self.idx)).read_value()

    async def write(self, name: str, value: Any, kind: int) -> None:
        await self.client.get_node(ua.NodeId(f"{self.station}.{name}", self.idx)).write_value(ua.Variant(value, kind))

    async def call(self, method: str, *args: Any) -> list[Any]:
        node = self.client.get_node(ua.NodeId(self.station, self.idx))
        return await node.call_method(ua.QualifiedName(method, self.idx), *args)

    async def wait(self, name: str, expected: Any, timeout_s: float = WAIT_S) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (value := await self.read(name)) != expected and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return value


class EventRecorder:
    """The SCADA side: ResultReady events of the station object."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def event_notification(self, event: Any) -> None:
        self.events.append(event)


def test_a_plc_client_triggers_parts_and_reads_each_result_and_scada_gets_result_ready_events(
    broker: Mosquitto, camera: MjpegCamera, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from inspector.pipeline import build_inspector

    data = station_data(tiny_model_dir, camera.url, trigger="opcua", trigger_timeout_s=30.0)
    data["recipes"] = RECIPES
    config = config_for(data)
    server = OpcUaServer(plain_settings(tmp_path))
    service = build_service(config, build_inspector(config), broker.port, tmp_path,
                            extra_sinks=[server.station_sink("st")])  # fmt: skip
    server.attach(service)
    server.start()
    subscriber = Subscriber(broker.port)
    running = RunningService(service)
    recorder = EventRecorder()

    async def line() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        scada = Client(server.endpoint)
        scada.set_user("plc1")
        scada.set_password("s3cret")
        async with scada, PlcClient(server.endpoint, "st") as plc:
            idx = await scada.get_namespace_index(URI)
            subscription = await scada.create_subscription(50, recorder)
            event_type = await scada.nodes.root.get_child(
                ["0:Types", "0:EventTypes", "0:BaseEventType", f"{idx}:ResultReadyEventType"]
            )
            await subscription.subscribe_events(scada.get_node(ua.NodeId("st", idx)), event_type)
            assert await plc.wait("Ready", True) is True, "the station never became Ready"
            seen["recipes"] = await plc.read("RecipeIds")
            for part, recipe in (("P-1", ""), ("P-2", "grey-tile")):
                assert await plc.call("StartSingleJob", part, recipe) == part  # JobId = PartId
                assert await plc.wait("PartId", part) == part
                assert await plc.wait("Busy", False) is False
                seen[part] = {name: await plc.read(name) for name in ("LastResult", "ResultId", "LastRecipeId")}
            # A part id already triggered, an unknown recipe, and the argument checks.
            for args, expected in ((("P-1",), ua.uaerrors.BadInvalidState),
                                   (("P-3", "blue-brick"), ua.uaerrors.BadInvalidArgument),
                                   (("bad id/slash",), ua.uaerrors.BadInvalidArgument),
                                   ((), ua.uaerrors.BadArgumentsMissing),
                                   ((5,), ua.uaerrors.BadTypeMismatch),
                                   (("P-4", "", "x"), ua.uaerrors.BadTooManyArguments)):  # fmt: skip
                with pytest.raises(expected):
                    await plc.call("StartSingleJob", *args)
            with pytest.raises(ua.uaerrors.BadInvalidArgument):
                await plc.call("SelectRecipe", "blue-brick")
            await plc.call("SelectRecipe", "grey-tile")
            seen["selected"] = await plc.wait("RecipeId", "grey-tile")
            with pytest.raises(ua.UaStatusCodeError):  # every variable is read-only
                await plc.write("RecipeId", "default", ua.VariantType.String)
            await plc.call("Pause")
            seen["paused"] = await plc.wait("Paused", True)
            seen["halted"] = await plc.wait("VisionState", "Halted")
            await plc.call("Resume")
            seen["resumed"] = await plc.wait("Paused", False)
            seen["counts"] = sum([await plc.read(n) for n in ("CountOK", "CountNG", "CountUncertain")])
            for _ in range(200):
                if len(recorder.events) >= 2:
                    break
                await asyncio.sleep(0.05)
        return seen

    try:
        assert poll(lambda: service.capture.captured > 0, WAIT_S), "the camera delivers no frames"
        seen = asyncio.run(line())
        verdicts = {v["source"]["part_id"]: v for v in subscriber.json("verdict")}
        assert sorted(verdicts) == ["P-1", "P-2"], "one verdict per StartSingleJob, none for the refused calls"
        for part, recipe in (("P-1", "default"), ("P-2", "grey-tile")):
            assert seen[part] == {"LastResult": verdicts[part]["verdict"], "ResultId": verdicts[part]["message_id"],
                                  "LastRecipeId": recipe}  # fmt: skip
            assert verdicts[part]["recipe"] == recipe
        assert seen["recipes"] == ["default", "grey-tile"] and seen["selected"] == "grey-tile"
        assert seen["paused"] is True and seen["halted"] == "Halted" and seen["resumed"] is False
        assert seen["counts"] == 2
        events = [(e.PartId, e.RecipeId, e.Result, e.ResultId) for e in recorder.events]
        assert events == [(p, verdicts[p]["recipe"], verdicts[p]["verdict"], verdicts[p]["message_id"])
                          for p in ("P-1", "P-2")]  # fmt: skip
        assert server.refused_calls == 7
    finally:
        assert running.stop() == 0
        subscriber.close()
        server.close()


# -- the door: credentials, certificates, configuration -----------------------------------------------


class StationStandIn:
    """A minimal StationControl for the security tests (no inspection behind it)."""

    name = "press-1"

    def __init__(self, triggered: bool = True) -> None:
        self.parts: list[tuple[str, str | None]] = []
        self.triggered = triggered

    def trigger_part(self, part_id: str, recipe_id: str | None = None) -> str:
        if not self.triggered:
            raise CommandRejected("station press-1 is free-running (source.trigger: none)")
        self.parts.append((part_id, recipe_id))
        return "accepted"

    def select_recipe(self, recipe_id: str) -> dict[str, Any]:
        raise CommandRejected(f"unknown recipe {recipe_id!r}; this station has: default")

    def pause(self) -> dict[str, Any]:
        return {"paused": True}

    def resume(self) -> dict[str, Any]:
        return {"paused": False}

    def line_state(self) -> LineState:
        return LineState("online", True, False, False, self.triggered, "default", ("default",))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[OpcUaServer, StationStandIn]]:
    station = StationStandIn()
    server = OpcUaServer(plain_settings(tmp_path))
    server.add_station(station)
    server.start()
    yield server, station
    server.close()


def test_wrong_credentials_and_anonymous_clients_are_refused(served: tuple[OpcUaServer, StationStandIn]) -> None:
    server, station = served

    async def connect(user: str | None, password: str | None) -> None:
        client = Client(server.endpoint)
        if user is not None:
            client.set_user(user)
            client.set_password(password or "")
        async with client:
            pass

    for user, password in (("plc1", "wrong"), ("nobody", "s3cret"), (None, None)):
        with pytest.raises(ua.UaStatusCodeError) as caught:
            asyncio.run(connect(user, password))
        assert type(caught.value).__name__ in ("BadUserAccessDenied", "BadIdentityTokenInvalid",
                                               "BadIdentityTokenRejected")  # fmt: skip
    assert call(server, "press-1", "StartSingleJob", "P-9") == "P-9"  # the right password works
    assert station.parts == [("P-9", None)]


def test_a_free_running_station_answers_start_single_job_with_bad_invalid_state(tmp_path: Path) -> None:
    server = OpcUaServer(plain_settings(tmp_path))
    server.add_station(StationStandIn(triggered=False))
    server.start()
    try:
        assert refusal(server, "press-1", "StartSingleJob", "P-1") == "BadInvalidState"
        assert refusal(server, "press-1", "Pause", "extra") == "BadTooManyArguments"
    finally:
        server.close()


def _certificate(folder: Path, name: str, uri: str, use: Any) -> tuple[Path, Path]:
    key, cert = folder / f"{name}-key.pem", folder / f"{name}-cert.der"
    asyncio.run(setup_self_signed_certificate(key, cert, uri, "localhost", [use], {"commonName": name}))
    return cert, key


def test_sign_and_encrypt_with_a_trusted_client_certificate_only(tmp_path: Path) -> None:
    server_cert, server_key = _certificate(tmp_path, "server", "urn:line-inspector:server",
                                           ExtendedKeyUsageOID.SERVER_AUTH)  # fmt: skip
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    good_cert, good_key = _certificate(tmp_path, "plc", "urn:plc:client", ExtendedKeyUsageOID.CLIENT_AUTH)
    (trusted / good_cert.name).write_bytes(good_cert.read_bytes())
    bad_cert, bad_key = _certificate(tmp_path, "stranger", "urn:stranger:client", ExtendedKeyUsageOID.CLIENT_AUTH)
    settings = OpcUaConfig(port=free_port(), certificate_file=server_cert, private_key_file=server_key,
                           trusted_clients_dir=trusted, users_file=users_file(tmp_path))  # fmt: skip
    server = OpcUaServer(settings)
    server.add_station(StationStandIn())
    server.start()

    async def read_ready(cert: Path | None, key: Path | None, policy: Any) -> bool:
        client = Client(server.endpoint)
        client.application_uri = "urn:plc:client" if cert == good_cert else "urn:stranger:client"
        client.set_user("plc1")
        client.set_password("s3cret")
        if cert is not None:
            await client.set_security(policy, str(cert), str(key), server_certificate=str(server_cert))
        async with client:
            idx = await client.get_namespace_index(URI)
            return await client.get_node(ua.NodeId("press-1.Ready", idx)).read_value()

    try:
        policies = (security_policies.SecurityPolicyBasic256Sha256, security_policies.SecurityPolicyAes128Sha256RsaOaep)
        for policy in policies:
            assert asyncio.run(read_ready(good_cert, good_key, policy)) is True
        with pytest.raises(Exception) as untrusted:  # noqa: B017 - asyncua raises the refusal its own ways
            asyncio.run(read_ready(bad_cert, bad_key, security_policies.SecurityPolicyBasic256Sha256))
        assert "Untrusted" in repr(untrusted.value) or "Bad" in type(untrusted.value).__name__
        with pytest.raises(Exception):  # noqa: B017 - no unencrypted endpoint is offered
            asyncio.run(read_ready(None, None, None))
    finally:
        server.close()


def test_the_config_refuses_a_server_nobody_can_log_in_to_or_without_its_certificate() -> None:
    with pytest.raises(ValidationError, match="no way to log in"):
        OpcUaConfig(security_policies=["None"])
    with pytest.raises(ValidationError, match="need certificate_file and private_key_file"):
        OpcUaConfig(allow_anonymous=True)
    assert OpcUaConfig(allow_anonymous=True, security_policies=["None"]).host == "127.0.0.1"  # localhost by default


def test_password_hashes_verify_only_their_password() -> None:
    stored = hash_password("s3cret", iterations=1000)
    assert verify_password("s3cret", stored) and not verify_password("s3cret!", stored)
    assert not verify_password("s3cret", "plain-text") and "s3cret" not in stored


def test_a_port_in_use_is_a_clear_error(served: tuple[OpcUaServer, StationStandIn], tmp_path: Path) -> None:
    from inspector.errors import InspectorError

    taken, _ = served
    second = OpcUaServer(OpcUaConfig(port=taken.settings.port, security_policies=["None"], allow_anonymous=True))
    second.add_station(StationStandIn())
    with pytest.raises(InspectorError, match="cannot"):
        second.start()

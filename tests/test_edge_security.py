"""Who may steer a station, tested as an attacker would: reload-config paths, value leaks, refused commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.commands import CommandRejected, ReloadConfigCommand, check_accepted, parse_command
from edge.reload import Overrides, confine_reload_path, requested_config

SECRET = "hunter2"
GOOD = {
    "station": {"site": "s", "area": "a", "line": "l", "station": "st"},
    "source": {"uri": "clip.mp4"},
    "model": {"path": "models/tiny"},
    "inspection": {"product": "a surface", "defects": {"scratch": {"description": "a line"}}},
}


@pytest.fixture
def box(tmp_path: Path) -> dict[str, Path]:
    """A config folder with a good station file, and secrets elsewhere on the box."""
    configs = tmp_path / "etc" / "line-inspector"
    configs.mkdir(parents=True)
    (configs / "station.yaml").write_text(yaml.safe_dump(GOOD))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "db.yaml").write_text(f"db_password: {SECRET}\n")
    (configs / "leaky.yaml").write_text(yaml.safe_dump({**GOOD, "db_password": SECRET}))
    bad_value = {**GOOD, "model": {"path": "m", "backend": SECRET}}
    (configs / "bad-value.yaml").write_text(yaml.safe_dump(bad_value))
    (configs / "broken.yaml").write_text(f"station: [{SECRET}\n")
    return {"configs": configs, "secrets": secrets}


def reload(path: str, allowed: list[Path]) -> str:
    """The rejection message a remote requester would read."""
    with pytest.raises(CommandRejected) as caught:
        requested_config(ReloadConfigCommand(command="reload-config", path=path), Overrides(), allowed_dirs=allowed)
    return caught.value.message


def test_a_path_inside_the_config_folder_loads(box: dict[str, Path]) -> None:
    command = ReloadConfigCommand(command="reload-config", path="station.yaml")  # relative: the config's folder
    config = requested_config(command, Overrides(), allowed_dirs=[box["configs"]])
    assert config.station.station == "st"


@pytest.mark.parametrize(
    "attack",
    [
        "../../secrets/db.yaml",  # traversal
        "{secrets}/db.yaml",  # absolute, outside
        "{configs}/../../secrets/db.yaml",  # absolute with traversal
        "link.yaml",  # a symlink inside pointing outside
        "/etc/passwd",  # not YAML, outside
        "station.yaml\x00.png",  # NUL trick
        "{configs}",  # a folder
    ],
)
def test_paths_out_of_the_allowed_folders_are_refused_without_echo(box: dict[str, Path], attack: str) -> None:
    os.symlink(box["secrets"] / "db.yaml", box["configs"] / "link.yaml")
    path = attack.format(**{k: str(v) for k, v in box.items()})
    message = reload(path, [box["configs"]])
    assert "reload-config" in message and ("refused" in message or "no such config file" in message)
    assert SECRET not in message and "secrets" not in message and "db.yaml" not in message


def test_an_allow_listed_folder_may_be_read(box: dict[str, Path]) -> None:
    extra = box["secrets"].parent / "stations"
    extra.mkdir()
    (extra / "b.yaml").write_text(yaml.safe_dump(GOOD))
    assert reload(str(extra / "b.yaml"), [box["configs"]]).startswith("reload-config refused")
    command = ReloadConfigCommand(command="reload-config", path=str(extra / "b.yaml"))
    # Its relative paths are taken from its own folder.
    assert requested_config(command, Overrides(), allowed_dirs=[box["configs"], extra]).source.uri == str(
        extra / "clip.mp4"
    )


def test_no_allowed_folder_means_no_path_at_all(box: dict[str, Path]) -> None:
    assert "refused" in reload(str(box["configs"] / "station.yaml"), [])


@pytest.mark.parametrize("name", ["leaky.yaml", "bad-value.yaml", "broken.yaml"])
def test_errors_about_a_file_name_the_field_and_the_rule_never_the_value(box: dict[str, Path], name: str) -> None:
    message = reload(name, [box["configs"]])
    assert SECRET not in message
    expected = {"leaky.yaml": "db_password: unknown key", "bad-value.yaml": "model", "broken.yaml": "not valid YAML"}
    assert expected[name] in message


def test_inline_configs_do_not_echo_values_either() -> None:
    inline = {**GOOD, "tiling": {"tile": SECRET}, "extra": {"token": SECRET}}
    with pytest.raises(CommandRejected) as caught:
        requested_config(ReloadConfigCommand(command="reload-config", config=inline), Overrides())
    assert SECRET not in caught.value.message
    assert "tiling.tile" in caught.value.message and "extra: unknown key" in caught.value.message


def test_commands_not_in_the_allow_list_are_refused_by_name() -> None:
    command = parse_command(b'{"command": "reload-config", "path": "x.yaml"}')
    with pytest.raises(CommandRejected, match=r"'reload-config' is not accepted over MQTT .*pause, resume"):
        check_accepted(command, ["pause", "resume"])
    check_accepted(parse_command(b'{"command": "pause"}'), ["pause", "resume"])


def test_over_mqtt_an_attacker_learns_nothing_and_refused_commands_do_nothing(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A real broker and service: reload-config at a secret outside the folder, at a leaky file inside it,
    and a command the station does not take over MQTT. The answers name rules; the secret never appears."""
    import json
    import threading

    import paho.mqtt.client as mqtt
    from edge_station import ROOT, build_service, config_for, station_data
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from inspector.pipeline import build_inspector

    from mosquitto import Mosquitto, free_port
    from streams import poll

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "leaky.yaml").write_text(yaml.safe_dump({**GOOD, "db_password": SECRET}))
    (tmp_path / "db.yaml").write_text(f"db_password: {SECRET}\n")
    os.symlink(tmp_path / "db.yaml", configs / "link.yaml")
    config = config_for(station_data(tiny_model_dir, f"http://127.0.0.1:{free_port()}/x.mjpg"))
    answers: dict[bytes, dict] = {}
    with Mosquitto(tmp_path / "broker") as broker:
        service = build_service(config, build_inspector(config), broker.port, tmp_path,
                                reload_dirs=(configs,), mqtt_commands=("pause", "resume", "reload-config"))  # fmt: skip
        service.start()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        ready = threading.Event()
        station = f"{ROOT}/s/a/l1/st"
        other_reject = f"{ROOT}/s/a/l1/other/reject"  # where a PLC of another station listens
        on_other: list[bytes] = []

        def on_message(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
            if m.topic == other_reject:
                on_other.append(m.payload)
            else:
                answers[m.properties.CorrelationData] = json.loads(m.payload)

        client.on_connect = lambda c, *_: (c.subscribe([(f"{station}/response/#", 1), (other_reject, 1)]), ready.set())
        client.on_message = on_message
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        try:
            assert ready.wait(10) and poll(lambda: service.mqtt.connected, 30)
            requests = {
                b"outside": {"command": "reload-config", "path": str(tmp_path / "db.yaml")},
                b"traversal": {"command": "reload-config", "path": "../db.yaml"},
                b"symlink": {"command": "reload-config", "path": "link.yaml"},
                b"leaky": {"command": "reload-config", "path": "leaky.yaml"},
                b"snapshot": {"command": "snapshot"},
                b"elsewhere": {"command": "pause"},  # answered on another station's reject topic
                b"wildcard": {"command": "pause"},
            }
            for key, body in requests.items():
                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic = {b"elsewhere": other_reject, b"wildcard": f"{station}/response/+"}.get(
                    key, f"{station}/response/attacker"
                )
                props.CorrelationData = key
                client.publish(f"{station}/cmd", json.dumps(body), qos=1, properties=props)
            assert poll(lambda: len(answers) == len(requests), 30), answers
        finally:
            client.loop_stop()
            client.disconnect()
            service.shutdown()
    assert all(not a["ok"] for a in answers.values())
    assert all(SECRET not in json.dumps(a) for a in answers.values())
    for key in (b"outside", b"traversal", b"symlink"):
        assert "refused" in answers[key]["error"] and "db.yaml" not in answers[key]["error"]
    assert "db_password: unknown key" in answers[b"leaky"]["error"]
    assert "not accepted over MQTT" in answers[b"snapshot"]["error"]
    for key in (b"elsewhere", b"wildcard"):  # refused, answered in the station's own namespace, not executed
        assert "response topic refused" in answers[key]["error"] and f"{station}/response" in answers[key]["error"]
    assert on_other == [] and not service.lane.paused.is_set()
    assert service.config == config  # nothing changed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["..", ".", "sub", "station.yaml", "out.yaml", "", "/", "~"]), min_size=1, max_size=6))
def test_whatever_the_path_an_accepted_one_lies_inside_the_folder(box: dict[str, Path], parts: list[str]) -> None:
    (box["configs"] / "sub").mkdir(exist_ok=True)
    if not (box["configs"] / "sub" / "out.yaml").exists():
        os.symlink(box["secrets"] / "db.yaml", box["configs"] / "sub" / "out.yaml")
    try:
        resolved = confine_reload_path("/".join(parts), [box["configs"]])
    except CommandRejected as rejected:
        assert SECRET not in rejected.message and "secrets" not in rejected.message
    else:
        assert resolved.is_relative_to(box["configs"].resolve()) and resolved.is_file()


# --------------------------------------------------------------------------- inline configs name no file outside


def inline(config: dict, allowed: list[Path], current: object = None) -> str:
    """The rejection a remote requester reads for an inline reload-config."""
    command = ReloadConfigCommand(command="reload-config", config=config)
    with pytest.raises(CommandRejected) as caught:
        requested_config(command, Overrides(), allowed_dirs=allowed, current=current)
    return caught.value.message


@pytest.mark.parametrize(
    ("field", "mutate"),
    [
        ("model.path", lambda d, s: d.update(model={"path": str(s / "model")})),
        ("model.path", lambda d, s: d.update(model={"path": "../../secrets/model"})),
        ("model.path", lambda d, s: d.update(model={"path": "Qwen/Qwen3-VL-4B-Instruct"})),  # a hub id: a download
        ("model.onnx_dir", lambda d, s: d.update(model={"path": "m", "backend": "onnxruntime", "onnx_dir": str(s)})),
        ("model.engine_dir", lambda d, s: d.update(model={"path": "m", "backend": "tensorrt", "engine_dir": str(s)})),
        ("source.uri", lambda d, s: d.update(source={"uri": str(s / "clip.mp4")})),
        ("source.uri", lambda d, s: d.update(source={"uri": str(s / "*.png")})),
        ("tiling.roi.mask", lambda d, s: d.update(tiling={"roi": {"mask": str(s / "mask.png")}})),
        ("sinks.jsonl.path", lambda d, s: d.update(sinks={"jsonl": {"path": str(s / "out.jsonl")}})),
        # A GenTL producer is a shared library the source loads: naming one is running its code.
        ("source.uri", lambda d, s: d.update(source={"uri": f"genicam://{s}/evil.cti?serial=1"})),
        ("source.uri", lambda d, s: d.update(source={"uri": f"genicam://{s}/../secrets/evil.cti"})),
        ("source.uri", lambda d, s: d.update(source={"uri": "genicam://vendor/evil.cti"})),  # relative: cwd's
        # A camera feature may name a host file (the pylon emulator's ImageFilename, a user-set file).
        (
            "source.camera.features.ImageFilename",
            lambda d, s: d.update(source={"uri": "pylon://0", "camera": {"features": {"ImageFilename": str(s)}}}),
        ),
        (
            "source.camera.features.UserSetFile",
            lambda d, s: d.update(source={"uri": "pylon://0", "camera": {"features": {"UserSetFile": "u.pfs"}}}),
        ),
    ],
)
def test_an_inline_config_may_not_name_a_file_outside_the_allowed_folders(
    box: dict[str, Path], field: str, mutate: object
) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    mutate(data, box["secrets"])  # type: ignore[operator]
    message = inline(data, [box["configs"]])
    assert "refused" in message and field in message and str(box["secrets"]) not in message


def test_inline_paths_inside_the_folder_or_the_running_ones_are_accepted(box: dict[str, Path]) -> None:
    from inspector.config import parse_config

    running = parse_config({**GOOD, "model": {"path": "/opt/models/qwen"}, "source": {"uri": "rtsp://cam/1"}})
    # The running model (outside the folder) may be kept; a file inside the folder may be named, relative too.
    keep = {**GOOD, "model": {"path": "/opt/models/qwen"}, "source": {"uri": "clips/part.mp4"}}
    config = requested_config(ReloadConfigCommand(command="reload-config", config=keep), Overrides(),
                              allowed_dirs=[box["configs"]], current=running)  # fmt: skip
    assert config.model.path == "/opt/models/qwen"
    assert config.source.uri == str(box["configs"] / "clips" / "part.mp4")
    # Streams and camera indexes are no files.
    for uri in ("rtsp://10.0.0.9/stream", 2):
        live = {**GOOD, "model": {"path": "/opt/models/qwen"}, "source": {"uri": uri}}
        assert requested_config(ReloadConfigCommand(command="reload-config", config=live), Overrides(),
                                allowed_dirs=[box["configs"]], current=running).source.uri == uri  # fmt: skip
    # No allowed folder: an inline config may still change the prompt, but name no new file.
    assert "model.path" in inline({**GOOD, "model": {"path": "/elsewhere"}}, [], current=running)


def test_inline_camera_producers_and_features_inside_the_folder_or_the_running_ones_are_accepted(
    box: dict[str, Path],
) -> None:
    from inspector.config import parse_config

    features = {"ImageFilename": "/opt/frames", "ExposureAuto": "Off"}
    camera = {"uri": "genicam:///opt/vendor/x.cti?serial=1", "camera": {"features": features}}
    running = parse_config({**GOOD, "model": {"path": "/opt/models/qwen"}, "source": camera})

    def accepted(source: dict) -> object:
        data = {**GOOD, "model": {"path": "/opt/models/qwen"}, "source": source}
        return requested_config(ReloadConfigCommand(command="reload-config", config=data), Overrides(),
                                allowed_dirs=[box["configs"]], current=running).source  # fmt: skip

    # The running producer with another device; the running string features, new numbers and booleans.
    more = {**features, "ExposureTime": 900.0, "ReverseX": True}
    source = accepted({"uri": "genicam:///opt/vendor/x.cti?serial=2", "camera": {"features": more}})
    assert source.uri == "genicam:///opt/vendor/x.cti?serial=2" and source.camera.features == more
    # A producer and a feature file inside the allowed folder.
    inside = {"ImageFilename": str(box["configs"] / "frames")}
    source = accepted({"uri": f"genicam://{box['configs']}/y.cti", "camera": {"features": inside}})
    assert source.uri == f"genicam://{box['configs']}/y.cti" and source.camera.features == inside
    # Any other string value counts as a path (enum names and file names look alike: `frames`, `Off`):
    # an inline config may not set it; a config file in the allowed folders may (the path form).
    off = {**features, "ExposureAuto": "Continuous"}
    message = inline({**GOOD, "model": {"path": "/opt/models/qwen"}, "source": {**camera, "camera": {"features": off}}},
                     [box["configs"]], current=running)  # fmt: skip
    assert "source.camera.features.ExposureAuto" in message and "ImageFilename" not in message


def test_reload_config_is_not_taken_over_mqtt_unless_the_config_says_so() -> None:
    from edge.options import ServiceOptions
    from inspector.config import EdgeConfig

    assert "reload-config" not in EdgeConfig().mqtt_commands
    assert "reload-config" not in ServiceOptions().mqtt_commands
    assert "reload-config" in EdgeConfig(mqtt_commands=["reload-config"]).mqtt_commands

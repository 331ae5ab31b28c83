"""Station configs: the shipped ones validate; each kind of mistake is named by its field path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from inspector.cli import main
from inspector.config import StationFile, load_config, parse_config
from inspector.errors import ConfigError, ModelError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _demo() -> dict:
    return yaml.safe_load((CONFIGS / "demo.yaml").read_text())


@pytest.mark.parametrize("name", ["demo.yaml", "line-example.yaml", "plc-line.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert isinstance(config, StationFile)
    assert config.inspection.classes[0] == "ok"


def _set(data: dict, dotted: str, value) -> dict:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return data


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("tiling.tile", 500, "tiling.tile: must be a multiple of 32"),
        ("tiling.overlap", 1.5, "tiling.overlap"),
        ("model.backend", "tflite", "model.backend"),
        ("model.device", "gpu0", "model.device"),
        ("inspection.defects.scratch.threshold", 1.7, "inspection.defects.scratch.threshold"),
        ("inspection.explanation", "sometimes", "inspection.explanation"),
        ("inspection.defects", {}, "inspection.defects"),
        ("inspection.defects.ok", {"description": "x"}, "'ok' is the built-in"),
        ("station.line", "line/3", "station.line"),
        ("tiling.tyle", 512, "tiling.tyle: unknown key"),
        ("tiling.roi", {"rect": [10, 10, 5, 20]}, "tiling.roi.rect"),
        ("sinks.mqtt", {"password": "a", "password_env": "B"}, "at most one of password"),
        ("sinks.mqtt.port", 70000, "sinks.mqtt.port"),
    ],
)
def test_bad_field_is_named(field: str, value, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_set(_demo(), field, value), "station.yaml")
    message = str(caught.value)
    assert message.startswith("station.yaml: invalid configuration")
    assert expected in message


def test_missing_required_section_is_named() -> None:
    data = _demo()
    del data["model"]
    with pytest.raises(ConfigError, match=r"model: Field required"):
        parse_config(data, "x.yaml")


def test_not_yaml_names_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  path: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML at line \d+"):
        load_config(bad)


def test_top_level_not_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_missing_file_has_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.hint


def test_cli_check_prints_effective_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(CONFIGS / "demo.yaml")]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["tiling"]["tile"] == 128
    assert printed["source"]["reconnect"]["max_s"] == 30.0  # defaults are filled in


def test_cli_check_error_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_set(_demo(), "tiling.tile", 100)))
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "tiling.tile" in err and "Traceback" not in err


def test_password_never_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(yaml.safe_dump(_set(_demo(), "sinks.mqtt", {"password": "hunter2"})))
    assert main(["config", "check", str(path)]) == 0
    assert "hunter2" not in capsys.readouterr().out


# -- the model section: a discriminated union on backend, one config model per plugin ----------


def _with_model(**model) -> dict:
    data = _demo()
    data["model"] = model
    return data


def test_backend_defaults_to_torch_and_shared_fields_apply() -> None:
    config = parse_config(_with_model(path="models/tiny", batch_size=2, dtype="bfloat16", device="auto"))
    assert type(config.model).__name__ == "TorchConfig"
    assert (config.model.backend, config.model.batch_size, config.model.device) == ("torch", 2, "auto")


def test_each_backend_gets_its_own_config_model() -> None:
    onnx = parse_config(_with_model(path="m", backend="onnxruntime", onnx_dir="graphs")).model
    trt = parse_config(_with_model(path="m", backend="tensorrt", engine_dir="engines")).model
    assert type(onnx).__name__ == "OnnxRuntimeConfig" and onnx.onnx_dir == Path("graphs")
    assert type(trt).__name__ == "TensorRTConfig" and trt.engine_dir == Path("engines")
    assert (trt.dtype, trt.device) == ("fp8", "cuda")  # the edge box's defaults


def _foreign_keys() -> list[tuple[str, str, str]]:
    """(backend, key, owner) for every option that belongs to another backend only, from the registry."""
    from inspector.backends.base import BackendConfig
    from inspector.backends.registry import PLUGINS

    cases = []
    for name, plugin in PLUGINS.items():
        for owner, other in PLUGINS.items():
            for key in other.config.model_fields:
                if key not in BackendConfig.model_fields and key not in plugin.config.model_fields:
                    cases.append((name, key, owner))
    return cases


@pytest.mark.parametrize(("backend", "key", "owner"), _foreign_keys())
def test_an_option_of_another_backend_is_refused_naming_its_owner(backend: str, key: str, owner: str) -> None:
    model = {"path": "m", "backend": backend, "engine_dir": "e", key: "x"}
    if backend != "tensorrt":
        model.pop("engine_dir") if key != "engine_dir" else None
    with pytest.raises(ConfigError) as caught:
        parse_config(_with_model(**model), "station.yaml")
    message = str(caught.value)
    assert f"model.{key}: not an option of backend {backend}" in message
    assert owner in message.split(f"model.{key}:")[1].splitlines()[0]


def test_foreign_keys_cover_onnx_dir_under_torch() -> None:
    assert ("torch", "onnx_dir", "onnxruntime") in _foreign_keys()
    assert ("onnxruntime", "engine_dir", "tensorrt") in _foreign_keys()


def test_unknown_backend_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_with_model(path="m", backend="tflite"), "station.yaml")
    assert "model.backend: unknown backend; use one of: torch, onnxruntime, tensorrt (got 'tflite')" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"path": "m", "backend": "tensorrt"}, "model.engine_dir: Field required"),
        ({"path": "m", "backend": "tensorrt", "engine_dir": "e", "device": "cpu"}, "model.device"),
        ({"path": "m", "dtype": "int4"}, "model.dtype"),
        ({"path": "m", "backend": "onnxruntime", "dtype": "fp8", "batch_size": 0}, "model.batch_size"),
        ({"backend": "torch"}, "model.path: Field required"),
    ],
)
def test_bad_model_fields_are_named_without_the_union_tag(model: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_with_model(**model), "station.yaml")
    message = str(caught.value)
    assert expected in message
    assert "model.torch" not in message and "model.tensorrt" not in message and "model.onnxruntime" not in message


def test_model_not_a_mapping_is_explained() -> None:
    data = _demo()
    data["model"] = "models/tiny"
    with pytest.raises(ConfigError, match=r"model: must be a mapping with path: and backend:"):
        parse_config(data, "station.yaml")


def test_fp8_is_accepted_on_torch_and_refused_when_loading(tiny_model_dir: Path) -> None:
    from inspector.backends.registry import create_backend

    model = parse_config(_with_model(path=str(tiny_model_dir), dtype="fp8", device="cpu")).model
    assert model.dtype == "fp8"
    with pytest.raises(ModelError, match="fp8"):
        create_backend(model)


# -- command-line overrides of the model section ------------------------------------------------


def test_onnx_override_switches_torch_to_onnxruntime() -> None:
    from inspector.pipeline import model_config_with

    config = model_config_with(parse_config(_demo()), onnx_dir="graphs")
    model = config.model
    assert (model.backend, model.onnx_dir, model.path) == ("onnxruntime", Path("graphs"), "../models/tiny")


def test_backend_override_drops_the_other_backends_options() -> None:
    from inspector.pipeline import model_config_with

    onnx = parse_config(_with_model(path="m", backend="onnxruntime", onnx_dir="graphs", batch_size=3))
    config = model_config_with(onnx, backend="torch")
    assert config.model.backend == "torch" and config.model.batch_size == 3
    assert not hasattr(config.model, "onnx_dir")


def test_an_override_the_backend_refuses_names_the_command_line() -> None:
    from inspector.pipeline import model_config_with

    with pytest.raises(ConfigError) as caught:
        model_config_with(parse_config(_demo()), backend="tensorrt")
    message = str(caught.value)
    assert message.startswith("command line (model overrides): invalid configuration (2 problem(s))")
    assert "model.engine_dir: Field required" in message
    assert "model.device: must be cuda or cuda:N (TensorRT runs on NVIDIA GPUs only) (got 'cpu')" in message


# -- config check: the backend's runtime must import ---------------------------------------------


def test_cli_check_refuses_a_backend_whose_runtime_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from inspector.backends import registry

    # A runtime that no environment has: the check must not depend on what this machine installed.
    missing = dataclasses.replace(registry.PLUGINS["onnxruntime"], requires=("no_such_runtime_xyz",))
    monkeypatch.setitem(registry.PLUGINS, "onnxruntime", missing)
    path = tmp_path / "ort.yaml"
    path.write_text(yaml.safe_dump(_with_model(path="m", backend="onnxruntime", onnx_dir="g")))
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.backend: backend 'onnxruntime' needs no_such_runtime_xyz" in err
    assert "pip install 'onnxruntime>=1.20'" in err and "Traceback" not in err
    assert main(["config", "check", "--skip-runtime", str(path)]) == 0


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("tensorrt") is not None, reason="tensorrt installed")
def test_cli_check_gives_the_tensorrt_install_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "trt.yaml"
    path.write_text(yaml.safe_dump(_with_model(path="m", backend="tensorrt", engine_dir="engines")))
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pip install tensorrt" in err and "compute capability" in err


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("tensorrt") is not None, reason="tensorrt installed")
def test_loading_tensorrt_without_its_runtime_names_the_install() -> None:
    from inspector.backends.registry import create_backend

    model = parse_config(_with_model(path="m", backend="tensorrt", engine_dir="engines")).model
    with pytest.raises(ModelError, match="needs tensorrt") as caught:
        create_backend(model)
    assert "pip install tensorrt" in str(caught.value.hint)


# -- config check on a several-stations file (inspector-edge's multi-camera layout) -------------------


def test_cli_checks_a_several_stations_file_station_by_station(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check", "--json", str(CONFIGS / "multi-station.yaml")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["stations"]) >= 2 and "edge" in printed
    data = yaml.safe_load((CONFIGS / "multi-station.yaml").read_text())
    name = next(iter(data["stations"]))
    data["stations"][name] = {**data["stations"][name], "tiling": {"tile": 100}}
    bad = tmp_path / "stations.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"stations.{name}" in err and "tiling.tile" in err and "Traceback" not in err

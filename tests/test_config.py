"""Station configs: the shipped ones validate; each kind of mistake is named by its field path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inspector.cli import main
from inspector.config import StationFile, load_config, parse_config
from inspector.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _demo() -> dict:
    return yaml.safe_load((CONFIGS / "demo.yaml").read_text())


@pytest.mark.parametrize("name", ["demo.yaml", "line-example.yaml"])
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
    assert printed["tiling"]["tile"] == 512
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

"""reload-config decisions (edge/reload.py) that need no model: overrides, swappable sections, model reloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge.commands import CommandRejected, ReloadConfigCommand
from edge.reload import Overrides, check_swappable, needs_model_load, requested_config
from inspector.config import StationFile, parse_config

BASE = {
    "station": {"site": "s", "area": "a", "line": "l", "station": "st"},
    "source": {"uri": "clip.mp4"},
    "model": {"path": "models/tiny"},
    "inspection": {"product": "a surface", "defects": {"scratch": {"description": "a line"}}},
}


def config(**changes: dict) -> StationFile:
    data = {key: dict(value) for key, value in BASE.items()}
    for section, update in changes.items():
        data[section] = {**data.get(section, {}), **update}
    return parse_config(data)


def test_command_line_overrides_win_over_the_reloaded_file(tmp_path: Path) -> None:
    path = tmp_path / "new.yaml"
    path.write_text(yaml.safe_dump({**BASE, "model": {"path": "elsewhere", "batch_size": 2}}))
    overrides = Overrides(source="rtsp://cam/1", model="/models/real", loop=True)
    got = requested_config(
        ReloadConfigCommand(command="reload-config", path=str(path)), overrides, allowed_dirs=[tmp_path]
    )
    assert got.source.uri == "rtsp://cam/1" and got.source.loop is True
    assert got.model.path == "/models/real" and got.model.batch_size == 2


def test_an_invalid_inline_config_is_a_rejection_naming_the_field() -> None:
    bad = {**BASE, "tiling": {"tile": 100}}
    with pytest.raises(CommandRejected, match=r"tiling\.tile: must be a multiple of 32"):
        requested_config(ReloadConfigCommand(command="reload-config", config=bad), Overrides())


@pytest.mark.parametrize("section", ["station", "sinks", "edge"])
def test_station_sinks_and_edge_settings_need_a_restart(section: str) -> None:
    change = {"station": {"line": "l2"}, "sinks": {"jsonl": {"path": "x.jsonl"}}, "edge": {"heartbeat_s": 1}}[section]
    with pytest.raises(CommandRejected, match=f"cannot change '{section}'"):
        check_swappable(config(), config(**{section: change}))
    check_swappable(config(), config(tiling={"tile": 256}, source={"uri": "other.mp4"}))  # these may change


def test_only_weight_changing_model_fields_reload_the_model() -> None:
    assert not needs_model_load(config(), config(model={"batch_size": 8, "max_reasoning_tokens": 64}))
    assert needs_model_load(config(), config(model={"path": "models/other"}))
    assert needs_model_load(config(), config(model={"dtype": "bfloat16"}))


def test_edge_settings_come_from_the_config_and_flags_override_them() -> None:
    from edge.options import edge_settings
    from edge.service import build_parser

    station = config(edge={"heartbeat_s": 2.5, "metrics_port": 0, "queue_size": 8})
    from_config = edge_settings(station, build_parser().parse_args(["--config", "x.yaml"]))
    assert (from_config.heartbeat_s, from_config.metrics_port, from_config.queue_size) == (2.5, 0, 8)
    assert from_config.stall_timeout_s == 60.0  # untouched default
    flags = build_parser().parse_args(["--config", "x.yaml", "--heartbeat-s", "1", "--metrics-port", "9200"])
    overridden = edge_settings(station, flags)
    assert (overridden.heartbeat_s, overridden.metrics_port, overridden.queue_size) == (1.0, 9200, 8)


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--metrics-port", "70000"], "metrics_port"),
        (["--heartbeat-s", "0"], "heartbeat_s"),
        (["--queue-size", "0"], "queue_size"),
        (["--drain-timeout-s", "-1"], "drain_timeout_s"),
    ],
)
def test_bad_edge_flag_names_the_setting(flags: list[str], field: str) -> None:
    from edge.options import edge_settings
    from edge.service import build_parser
    from inspector.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        edge_settings(config(), build_parser().parse_args(["--config", "x.yaml", *flags]))

"""Relative paths in a station config are taken from the config file's folder, not from where one starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from inspector.config import load_config
from inspector.stations import load_stations

REPO = Path(__file__).resolve().parents[1]
INSPECTION = {"product": "a surface", "defects": {"scratch": {"description": "a line"}}}


def test_relative_paths_resolve_against_the_config_folder_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "station"
    folder.mkdir(parents=True)
    (folder / "models" / "tiny").mkdir(parents=True)
    (folder / "station.yaml").write_text(yaml.safe_dump({
        "source": {"uri": "clips/part.mp4"},
        "tiling": {"roi": {"mask": "../masks/roi.png"}},
        "model": {"path": "models/tiny", "backend": "onnxruntime", "onnx_dir": "graphs"},
        "inspection": INSPECTION,
        "sinks": {"jsonl": {"path": "out/verdicts.jsonl"}, "mqtt": {"tls": {"ca_file": "ca.pem"}}},
        "edge": {"snapshot_dir": "snaps", "reload_paths": ["more", "/abs/ok"], "evidence": {"dir": "ev"}},
    }))  # fmt: skip
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("../../etc/station/station.yaml"))
    assert config.source.uri == str(folder / "clips" / "part.mp4")
    assert config.tiling.roi.mask == tmp_path / "etc" / "masks" / "roi.png"  # type: ignore[union-attr]
    assert config.model.path == str(folder / "models" / "tiny")  # a folder next to the file, not a hub id
    assert config.model.onnx_dir == folder / "graphs"  # type: ignore[union-attr]
    assert config.sinks.jsonl is not None and config.sinks.jsonl.path == folder / "out" / "verdicts.jsonl"
    assert config.sinks.mqtt is not None and config.sinks.mqtt.tls is not None
    assert config.sinks.mqtt.tls.ca_file == folder / "ca.pem"
    assert config.edge.snapshot_dir == folder / "snaps" and config.edge.evidence.dir == folder / "ev"
    assert config.edge.reload_paths == [folder / "more", Path("/abs/ok")]
    # What the file does not set keeps its default, from the working directory (systemd's state folder).
    assert config.sinks.mqtt.outbox == Path("outbox.sqlite")


def test_streams_cameras_and_hub_ids_are_not_paths(tmp_path: Path) -> None:
    for uri, model in (("rtsp://10.0.0.1/stream", "Qwen/Qwen3-VL-4B-Instruct"), (0, "/opt/models/qwen")):
        path = tmp_path / "station.yaml"
        path.write_text(yaml.safe_dump({"source": {"uri": uri}, "model": {"path": model}, "inspection": INSPECTION}))
        config = load_config(path)
        assert config.source.uri == uri and config.model.path == model


def test_the_shipped_configs_point_at_the_repository_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    demo = load_config(REPO / "configs" / "demo.yaml")
    assert demo.source.uri == str(REPO / "demo" / "clip.mp4")
    assert demo.model.path == str(REPO / "models" / "tiny")
    assert demo.sinks.jsonl is not None and demo.sinks.jsonl.path == REPO / "results.jsonl"
    edge, stations = load_stations(REPO / "configs" / "multi-station.yaml")
    assert edge.evidence.dir == REPO / "evidence"
    assert {config.model.path for config in stations.values()} == {str(REPO / "models" / "tiny")}
    example = load_config(REPO / "configs" / "line-example.yaml")
    assert example.model.path == "/opt/models/Qwen3-VL-4B-Instruct" and str(example.source.uri).startswith("rtsp://")
    assert os.getcwd() == str(tmp_path)

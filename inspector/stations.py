"""Several stations in one config file: a ``stations:`` mapping, a ``common:`` part, the ``edge:`` settings.

Loading and validating such a file is configuration, so it lives here; ``edge/stations.py`` runs
the stations and ``inspector config check`` validates the same file the same way. The layout::

    edge: {metrics_port: 9108, live_port: 9109}     # the process's settings, shared
    common:                                          # merged under every station (deeply)
      model: {path: /models/qwen3-vl-4b, batch_size: 8}
    stations:
      press-1: {source: {uri: rtsp://cam1/stream}}
      press-2: {source: {uri: rtsp://cam2/stream}}
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inspector.config import EdgeConfig, StationFile, format_validation_error, parse_config
from inspector.config_paths import STATION_PATH_FIELDS, resolve_relative
from inspector.errors import ConfigError

MAX_STATIONS = 16


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class _StationsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    edge: EdgeConfig = EdgeConfig()
    common: dict[str, Any] = Field(default_factory=dict, description="sections merged under every station")
    stations: dict[str, dict[str, Any]] = Field(min_length=1, max_length=MAX_STATIONS)


def is_multi_station(path: Path) -> bool:
    """True for a file with a top-level ``stations:`` mapping (cheap: no validation)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False  # load_config reports it properly
    return isinstance(data, dict) and "stations" in data


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))  # each station gets its own copy of the common sections
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_stations(path: Path) -> tuple[EdgeConfig, dict[str, StationFile]]:
    """The process's edge settings and each station's validated config; ``ConfigError`` names the station."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    try:
        top = _StationsFile.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(str(path), error), "see configs/multi-station.yaml") from None
    stations: dict[str, StationFile] = {}
    for name, section in top.stations.items():
        where = f"{path}: stations.{name}"
        if not _SAFE_NAME.fullmatch(name):  # it names the station's evidence folder and spill file
            raise ConfigError(f"{where}: a station key must be a plain name", "use letters, digits, '-', '_', '.'")
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: must be a mapping of station sections")
        if "edge" in section or "edge" in top.common:
            raise ConfigError(f"{where}: 'edge' belongs at the top level (one service serves every station)")
        merged = _merge(top.common, section)
        merged.setdefault("station", {}).setdefault("station", name)
        stations[name] = resolve_relative(parse_config(merged, where), path.parent)  # as load_config does
    _check_together(path, stations)
    edge_fields = [location[1:] for location in STATION_PATH_FIELDS if location[0] == "edge"]
    return resolve_relative(top.edge, path.parent, edge_fields), stations


def _check_together(path: Path, stations: Mapping[str, StationFile]) -> None:
    first_name, first = next(iter(stations.items()))
    seen_topics: dict[tuple[str, ...], str] = {}
    seen_files: dict[Path, str] = {}
    for name, config in stations.items():
        if config.model != first.model:
            raise ConfigError(
                f"{path}: stations.{name}.model differs from stations.{first_name}.model",
                "one process loads one model for every camera; run another inspector-edge for another model",
            )
        s = config.station
        identity = (s.site, s.area, s.line, s.station)
        if identity in seen_topics:
            raise ConfigError(
                f"{path}: stations.{name} and stations.{seen_topics[identity]} have the same site/area/line/station",
                "each station needs its own topics: give them different station names",
            )
        seen_topics[identity] = name
        files = [config.sinks.jsonl.path if config.sinks.jsonl else None,
                 config.sinks.mqtt.outbox if config.sinks.mqtt else None]  # fmt: skip
        for file in filter(None, files):
            key = file.resolve()
            if key in seen_files:
                raise ConfigError(
                    f"{path}: stations.{name} and stations.{seen_files[key]} write the same file {file}",
                    "give each station its own sinks.jsonl.path and sinks.mqtt.outbox",
                )
            seen_files[key] = name

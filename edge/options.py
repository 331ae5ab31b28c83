"""The service's settings: the config's ``edge:`` section with the command line's flags applied."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from edge.commands import COMMAND_NAMES
from inspector.config import EdgeConfig, StationFile, format_validation_error
from inspector.errors import ConfigError


@dataclass(frozen=True)
class ServiceOptions:
    heartbeat_s: float = 10.0
    snapshot_dir: Path = Path("snapshots")
    queue_size: int = 4
    drain_timeout_s: float = 10.0
    tick_s: float = 0.25
    # Longest a reload may wait for the frame in flight before it is applied.
    reload_timeout_s: float = 120.0
    # One frame in inference longer than this is a hang: degraded, and the watchdog is no longer petted.
    stall_timeout_s: float = 60.0
    # Folders reload-config may read (the config file's own first); empty: no path is accepted.
    reload_dirs: tuple[Path, ...] = ()
    mqtt_commands: tuple[str, ...] = COMMAND_NAMES


def service_options(settings: EdgeConfig, config_path: Path | None) -> ServiceOptions:
    """The service's options from the (flag-overridden) ``edge:`` section."""
    folders = ([config_path.resolve().parent] if config_path is not None else []) + list(settings.reload_paths)
    return ServiceOptions(
        heartbeat_s=settings.heartbeat_s,
        snapshot_dir=settings.snapshot_dir.resolve(),
        queue_size=settings.queue_size,
        drain_timeout_s=settings.drain_timeout_s,
        stall_timeout_s=settings.stall_timeout_s,
        reload_dirs=tuple(folders),
        mqtt_commands=tuple(settings.mqtt_commands),
    )


def edge_settings(config: StationFile, args: argparse.Namespace) -> EdgeConfig:
    """The config's ``edge`` section with the flags given on the command line applied, validated."""
    flags = {name: getattr(args, name) for name in EdgeConfig.model_fields if getattr(args, name, None) is not None}
    try:
        return EdgeConfig.model_validate({**config.edge.model_dump(), **flags})
    except ValidationError as error:
        raise ConfigError(format_validation_error("command line (edge settings)", error)) from None

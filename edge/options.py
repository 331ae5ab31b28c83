"""The service's settings: the config's ``edge:`` section with the command line's flags applied."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import ValidationError

from inspector.config import DEFAULT_MQTT_COMMANDS, EdgeConfig, StationFile, format_validation_error
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
    # reload-config only where a config names it (edge.mqtt_commands): it swaps the model and the prompt.
    mqtt_commands: tuple[str, ...] = DEFAULT_MQTT_COMMANDS
    # Verdicts failed in a row: degraded (and no watchdog ping) from degraded_after, exit 1 at exit_after (0: never).
    degraded_after: int = 5
    exit_after: int = 200
    sink_retries: int = 2
    spill_file: Path | None = None


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
        degraded_after=settings.degraded_after,
        exit_after=settings.exit_after,
        sink_retries=settings.sink_retries,
        spill_file=settings.spill_file.absolute(),
    )


def edge_settings(config: StationFile, args: argparse.Namespace) -> EdgeConfig:
    """The config's ``edge`` section with the flags given on the command line applied, validated."""
    flags = {name: getattr(args, name) for name in EdgeConfig.model_fields if getattr(args, name, None) is not None}
    try:
        return EdgeConfig.model_validate({**config.edge.model_dump(), **flags})
    except ValidationError as error:
        raise ConfigError(format_validation_error("command line (edge settings)", error)) from None


def require_a_sink(where: str, *, jsonl: object, mqtt: object, no_sink: bool) -> None:
    """A station with nowhere to send its verdicts drops every one of them: refuse, unless asked for."""
    if jsonl is None and mqtt is None and not no_sink:
        raise ConfigError(
            f"{where}: no sink configured: every verdict would be dropped",
            "set sinks.jsonl or sinks.mqtt in the config, pass --publish mqtt://HOST, "
            "or --no-sink to run without one on purpose (a demo, a soak test)",
        )


def station_options(options: ServiceOptions, station: str) -> ServiceOptions:
    """One station's options where several share the service: its own spill file beside the configured one
    (``undelivered.jsonl`` -> ``undelivered.press-1.jsonl``), so two publishers never append to one file."""
    spill = options.spill_file
    if spill is None:
        return options
    return replace(options, spill_file=spill.with_name(f"{spill.stem}.{station}{spill.suffix}"))

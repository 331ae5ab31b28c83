"""`inspector config check FILE`: validate a station config and print it with every default filled in."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from inspector.backends.base import BackendConfig
from inspector.backends.registry import PLUGINS, runtime_problem
from inspector.config import StationFile, load_config
from inspector.errors import ConfigError
from inspector.stations import is_multi_station, load_stations


def _backends_help() -> str:
    lines = []
    for name, plugin in PLUGINS.items():
        own = [field for field in plugin.config.model_fields if field not in BackendConfig.model_fields]
        lines.append(f"  {name:<12} {plugin.summary}" + (f"; its options: {', '.join(own)}" if own else ""))
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config",
        help="validate station configuration files",
        description="Validate station configuration (YAML). Errors name the file, the field path and what is allowed.",
    )
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate FILE and print the effective configuration",
        description=(
            "Validate FILE and print the effective configuration, defaults included.\n\n"
            "Sections: station (site/area/line/station/camera), source (uri, pace, loop, reconnect),\n"
            "tiling (tile, overlap, global_view, roi), model (backend, path, dtype, device, batch_size,\n"
            "reasoning, max_reasoning_tokens, and the backend's own options below), inspection (product,\n"
            "defects: {class: {description, threshold}}, uncertain_band, explanation: never|defects|always,\n"
            "max_explanation_tokens), sinks (jsonl, mqtt), edge (the service's settings).\n\n"
            "model.backend (default torch):\n" + _backends_help() + "\n\n"
            "The check also refuses a backend whose runtime cannot be imported here, and says what to\n"
            "install. A file with a stations: mapping (several cameras on one box, see\n"
            "configs/multi-station.yaml) is checked station by station, as inspector-edge loads it.\n"
            "See configs/demo.yaml and configs/line-example.yaml."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("file", type=Path, help="station YAML file (or a several-stations file)")
    check.add_argument(
        "--skip-runtime", action="store_true", help="validate only; do not check that the backend's runtime imports"
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    check.set_defaults(func=run)


_SECRET = {"sinks": {"mqtt": {"password"}}}


def run(args: argparse.Namespace) -> int:
    if is_multi_station(args.file):
        edge, stations = load_stations(args.file)
        where = {name: f"stations.{name}." for name in stations}
        effective = {"edge": edge.model_dump(mode="json")}
        effective["stations"] = {name: c.model_dump(mode="json", exclude=_SECRET) for name, c in stations.items()}
    else:
        config = load_config(args.file)
        stations, where = {"": config}, {"": ""}
        effective = config.model_dump(mode="json", exclude=_SECRET)
    for name, config in stations.items():
        _check_runtime(args, config, where[name])
    if args.json:
        print(json.dumps(effective))
    else:
        print(f"# {args.file}: valid")
        print(yaml.safe_dump(effective, sort_keys=False), end="")
    return 0


def _check_runtime(args: argparse.Namespace, config: StationFile, where: str) -> None:
    problem = None if args.skip_runtime else runtime_problem(config.model.backend)
    if problem is not None:  # valid YAML that would only fail when the model loads: say so now
        raise ConfigError(
            f"{args.file}: {where}model.backend: {problem.problem}", f"{problem.hint} (or pick another backend)"
        )

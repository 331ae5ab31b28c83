"""`inspector config check FILE`: validate a station config and print it with every default filled in."""

from __future__ import annotations

import argparse

import yaml

from inspector.backends.base import BackendConfig
from inspector.backends.registry import PLUGINS, runtime_problem
from inspector.config import load_config
from inspector.errors import ConfigError


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
            "install. See configs/demo.yaml and configs/line-example.yaml."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("file", help="station YAML file")
    check.add_argument(
        "--skip-runtime", action="store_true", help="validate only; do not check that the backend's runtime imports"
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    problem = None if args.skip_runtime else runtime_problem(config.model.backend)
    if problem is not None:  # valid YAML that would only fail when the model loads: say so now
        raise ConfigError(f"{args.file}: model.backend: {problem.problem}", f"{problem.hint} (or pick another backend)")
    data = config.model_dump(mode="json", exclude={"sinks": {"mqtt": {"password"}}})
    if args.json:
        print(config.model_dump_json(exclude={"sinks": {"mqtt": {"password"}}}))
    else:
        print(f"# {args.file}: valid")
        print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0

"""`inspector config check FILE`: validate a station config and print it with every default filled in."""

from __future__ import annotations

import argparse

import yaml

from inspector.config import load_config


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
            "tiling (tile, overlap, global_view, roi), model (path, backend, onnx_dir, dtype, device,\n"
            "batch_size, reasoning), inspection (product, defects: {class: {description, threshold}},\n"
            "uncertain_band, explanation: never|defects|always, max_explanation_tokens), sinks (jsonl, mqtt).\n"
            "See configs/demo.yaml and configs/line-example.yaml."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("file", help="station YAML file")
    check.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    data = config.model_dump(mode="json", exclude={"sinks": {"mqtt": {"password"}}})
    if args.json:
        print(config.model_dump_json(exclude={"sinks": {"mqtt": {"password"}}}))
    else:
        print(f"# {args.file}: valid")
        print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0

"""`inspector schema`: the JSON Schema of the verdict payload, for dashboards and subscribers."""

from __future__ import annotations

import argparse
import json

from inspector.payloads.verdict import json_schema


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="print the JSON Schema of frame verdicts",
        description="Print the JSON Schema (draft 2020-12) that every verdict payload (JSONL, MQTT) satisfies.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0

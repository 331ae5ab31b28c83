"""`inspector schema [NAME] | --all [DIR]`: the JSON Schemas of every payload on the wire."""

from __future__ import annotations

import argparse
import sys

from inspector.errors import InspectorError
from inspector.payloads.schemas import SCHEMAS, render, write_schemas

EXAMPLES = """\
payloads (topic leaf under {root}/{site}/{area}/{line}/{station}/):
  frame-verdict     verdict   every frame verdict (also each JSONL line)
  reject            reject    NG only: what a PLC needs to divert the part
  status            status    retained online/degraded/offline (birth message and MQTT Will)
  health            health    heartbeats (QoS 0)
  command           cmd       requests to the station (MQTT v5 request/response)
  command-response  (the request's response topic)
  trigger           trigger   a part in front of the camera (line controller -> station)

examples:
  inspector schema                          # the frame verdict
  inspector schema reject                   # one payload
  inspector schema --all schemas/           # every payload, one <name>.schema.json each
  inspector schema --all inspector/schemas  # regenerate the committed copies
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="print (or write) the JSON Schemas of verdicts and every other payload",
        description="Print the JSON Schema (draft 2020-12) of one payload (default: frame-verdict), "
        "or write every payload's schema into a folder with --all.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", default="frame-verdict", metavar="NAME", help=f"one of {', '.join(SCHEMAS)}")
    parser.add_argument(
        "--all", nargs="?", const=".", default=None, metavar="DIR", dest="all_dir",
        help="write <name>.schema.json for every payload into DIR (default: the current folder)",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.all_dir is not None:
        try:
            written = write_schemas(args.all_dir)
        except OSError as error:
            raise InspectorError(f"cannot write the schemas into {args.all_dir}: {error.strerror}") from None
        for path in written:
            print(path)
        return 0
    if args.name not in SCHEMAS:
        raise InspectorError(f"no payload named {args.name!r}", f"one of {', '.join(SCHEMAS)}")
    sys.stdout.write(render(SCHEMAS[args.name]()))
    return 0

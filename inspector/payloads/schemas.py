"""Every wire payload's JSON Schema, one file each: what ``inspector schema --all`` writes.

The committed copies in inspector/schemas/ are what integrators (PLCs, Node-RED, Grafana,
SCADA) validate against; tests/test_payload_schemas.py keeps them in sync with the models
and validates real payloads against the committed files. Regenerate them with::

    inspector schema --all inspector/schemas
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from inspector.payloads.command import command_json_schema
from inspector.payloads.health import health_json_schema
from inspector.payloads.reject import reject_json_schema
from inspector.payloads.response import response_json_schema
from inspector.payloads.status import status_json_schema
from inspector.payloads.trigger import trigger_json_schema
from inspector.payloads.verdict import json_schema as verdict_json_schema

# name -> schema; the file is ``<name>.schema.json``.
SCHEMAS: dict[str, Callable[[], dict[str, object]]] = {
    "frame-verdict": verdict_json_schema,
    "reject": reject_json_schema,
    "status": status_json_schema,
    "health": health_json_schema,
    "command": command_json_schema,
    "command-response": response_json_schema,
    "trigger": trigger_json_schema,
}

COMMITTED_DIR = Path(__file__).resolve().parents[1] / "schemas"


def file_name(name: str) -> str:
    return f"{name}.schema.json"


def render(schema: dict[str, object]) -> str:
    """The file text: stable key order, so a regenerated file only differs where the schema does."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: str | Path) -> list[Path]:
    """Write every schema into ``directory`` (created if missing); each file is replaced atomically."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in SCHEMAS.items():
        target = out / file_name(name)
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(render(schema()))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


def committed(name: str) -> dict[str, object]:
    """The committed copy of one schema (inspector/schemas/<name>.schema.json), as integrators get it."""
    return json.loads((COMMITTED_DIR / file_name(name)).read_text(encoding="utf-8"))

"""Reference pages written at docs build time (mkdocs-gen-files), so they follow the code.

- ``reference/config.md``: every key of the station YAML, from the pydantic models' field
  types, defaults and descriptions (``inspector.config.StationFile``, the backends' configs, the
  several-stations file);
- ``reference/payloads/<name>.md``: every committed JSON Schema in ``inspector/schemas/``;
- ``reference/cli.md``: the ``--help`` of every ``inspector`` command and of ``inspector-edge``,
  found through ``[project.scripts]`` in pyproject.toml.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import mkdocs_gen_files
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the checkout's code, also when the package is not installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["COLUMNS"] = "110"  # argparse wraps help at the terminal width: keep the pages stable

GENERATED_NOTE = "*Generated at build time from {what}; edit the code, not this page.*\n\n"


def _prose(text: object) -> str:
    """One line of Markdown from a docstring or description (reStructuredText ``code`` -> `code`)."""
    return " ".join(str(text).split()).replace("``", "`")


def _cell(text: object) -> str:
    """Table-cell-safe text: no newlines, no bare pipes."""
    return _prose(text).replace("|", "\\|")


# --- configuration ---------------------------------------------------------------------------


def _models_in(annotation: Any) -> list[tuple[str | None, type[BaseModel]]]:
    """The pydantic models an annotation can hold, with their union tag where there is one."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(None, annotation)]
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        tags = [getattr(item, "tag", None) for item in metadata if type(item).__name__ == "Tag"]
        found = _models_in(base)
        if tags and len(found) == 1:
            return [(tags[0], found[0][1])]
        return found
    if origin in (typing.Union, types.UnionType, list, tuple, dict, set, frozenset):
        models: list[tuple[str | None, type[BaseModel]]] = []
        for arg in typing.get_args(annotation):
            models.extend(_models_in(arg))
        return models
    return []


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin in (list, tuple, dict, set):
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in args if arg is not Ellipsis)}]"
    return str(annotation).replace("typing.", "")


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return ""
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value, default=str)}`"


def _row(key: str, kind: str, field: Any) -> str:
    return f"| `{key}` | {kind} | {_cell(_default(field))} | {_cell(field.description or '')} |"


def _config_rows(model: type[BaseModel], prefix: str, rows: list[str], sections: list[tuple[str, str, type]]) -> None:
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        nested = _models_in(field.annotation)
        tagged = [(tag, sub) for tag, sub in nested if tag]
        if tagged:  # a discriminated union (model: one config per backend): a section per branch
            for tag, sub in tagged:
                sections.append((key, tag, sub))
            choices = ", ".join(f"[{tag}](#{_anchor(key, tag)})" for tag, _ in tagged)
            rows.append(_row(key, f"one of: {choices}", field))
            continue
        optional = type(None) in typing.get_args(field.annotation)
        if len(nested) == 1 and optional:  # an optional section (sinks.mqtt): its keys, prefixed
            rows.append(_row(key, "optional section", field))
            _config_rows(nested[0][1], f"{key}.", rows, sections)
            continue
        if len(nested) == 1 and typing.get_origin(field.annotation) is dict:
            rows.append(f"| `{key}.<name>` | mapping of names to sections | {_default(field)} | "
                        f"{_cell(field.description or '')} |")
            _config_rows(nested[0][1], f"{key}.<name>.", rows, sections)
            continue
        if len(nested) == 1 and typing.get_origin(field.annotation) is None:
            _config_rows(nested[0][1], f"{key}.", rows, sections)
            continue
        kind = _type_name(field.annotation)
        if nested:  # e.g. roi: one of several small models
            kind = " or ".join(f"{{{', '.join(sub.model_fields)}}}" for _, sub in nested) + (
                " or null" if "null" in kind else ""
            )
        rows.append(_row(key, _cell(kind), field))


def _anchor(key: str, tag: str) -> str:
    # Only letters, digits and '-': a key like recipes.<name>.model must still make a valid anchor.
    return "".join(c for c in f"{key}-{tag}" if c.isalnum() or c == "-")


def _config_table(title: str, model: type[BaseModel], prefix: str, out: list[str], anchor: str = "") -> None:
    rows: list[str] = []
    sections: list[tuple[str, str, type]] = []
    _config_rows(model, prefix, rows, sections)
    out.append(f"## {title}" + (f" {{#{anchor}}}" if anchor else "") + "\n")
    if model.__doc__ and model.__doc__ is not BaseModel.__doc__:
        out.append(f"{_prose(model.__doc__)}\n")
    out.append("| key | type | default | meaning |\n|---|---|---|---|")
    out.extend(rows)
    out.append("")
    for key, tag, sub in sections:
        _config_table(f"`{key}`: {tag}", sub, f"{key}.", out, anchor=_anchor(key, tag))


def config_page() -> str:
    from inspector.config import StationFile

    out = ["# Configuration reference\n", GENERATED_NOTE.format(what="the pydantic models in `inspector/config.py` "
           "and `inspector/backends/`"), "Every key of a station YAML file. Unknown keys are errors. "
           "How the pieces fit: [configuration](../configuration.md).\n"]
    _config_table("Station file", StationFile, "", out)
    with contextlib.suppress(ImportError):
        stations = importlib.import_module("inspector.stations")
        several = getattr(stations, "_StationsFile", None)
        if several is not None:
            out.append("## Several stations in one file\n")
            out.append("`stations:` lists the stations one process runs; `common:` holds what they share "
                       "(merged into each; a station's own keys win). Each entry is a station file as above.\n")
            rows: list[str] = []
            _config_rows(several, "", rows, [])
            out.append("| key | type | default | meaning |\n|---|---|---|---|")
            out.extend(rows)
            out.append("")
    return "\n".join(out)


# --- payloads --------------------------------------------------------------------------------


def _schema_type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return f"object ({prop['$ref'].rsplit('/', 1)[-1]})"
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " | ".join(f"`{json.dumps(value)}`" for value in prop["enum"])
    if "anyOf" in prop or "oneOf" in prop:
        return " or ".join(_schema_type(option) for option in prop.get("anyOf", prop.get("oneOf")))
    kind = prop.get("type", "any")
    if kind == "array":
        items = prop.get("items") or (prop.get("prefixItems") or [{}])[0]
        kind = f"array of {_schema_type(items)}"
    elif kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        kind = f"object of {_schema_type(prop['additionalProperties'])}"
    if "format" in prop:
        kind += f" ({prop['format']})"
    return kind


def _schema_table(schema: dict[str, Any]) -> list[str]:
    if "properties" not in schema and ("oneOf" in schema or "anyOf" in schema):  # e.g. the command request
        options = [option["$ref"].rsplit("/", 1)[-1] for option in schema.get("oneOf", schema.get("anyOf"))
                   if "$ref" in option]
        return ["Exactly one of: " + ", ".join(f"[{name}](#{name.lower()})" for name in options) + "."]
    required = set(schema.get("required", []))
    rows = ["| field | type | required | meaning |", "|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        bounds = [f"{word} {prop[key]}" for key, word in (("minimum", "≥"), ("maximum", "≤")) if key in prop]
        meaning = "; ".join([prop.get("description", ""), *bounds]).strip("; ")
        rows.append(f"| `{name}` | {_cell(_schema_type(prop))} | {'yes' if name in required else ''} | "
                    f"{_cell(meaning)} |")
    return rows


def payload_page(path: Path) -> str:
    schema = json.loads(path.read_text(encoding="utf-8"))
    name = path.name.removesuffix(".schema.json")
    out = [f"# {name.replace('-', ' ').capitalize()}\n", GENERATED_NOTE.format(what=f"`inspector/schemas/{path.name}`")]
    if schema.get("title"):
        out.append(f"**{schema['title']}**\n")
    if schema.get("description"):
        out.append(f"{_prose(schema['description'])}\n")
    out.append(f"`$id`: `{schema.get('$id', '')}` · print it with `inspector schema {name}`.\n")
    out.extend(_schema_table(schema))
    for def_name, definition in schema.get("$defs", {}).items():
        out.append(f"\n## {def_name}\n")
        if definition.get("description"):
            out.append(f"{_prose(definition['description'])}\n")
        if "properties" in definition:
            out.extend(_schema_table(definition))
        else:
            out.append(f"{_cell(_schema_type(definition))}")
    out.append("\n## The schema\n")
    out.append('??? note "JSON Schema (draft 2020-12)"\n')
    out.append("    ```json")
    out.extend(f"    {line}" for line in json.dumps(schema, indent=2).splitlines())
    out.append("    ```\n")
    return "\n".join(out)


# --- command line ----------------------------------------------------------------------------


def _subparsers(parser: Any) -> list[tuple[str, Any]]:
    import argparse

    found = []
    for action in parser._actions:  # argparse keeps its subcommands here; no public accessor exists
        if isinstance(action, argparse._SubParsersAction):
            found.extend(action.choices.items())
    return found


def _help_sections(prog: str, parser: Any, out: list[str], depth: int = 2) -> None:
    out.append(f"{'#' * depth} `{prog}`\n")
    out.append("```text")
    out.append(parser.format_help().rstrip())
    out.append("```\n")
    for name, sub in _subparsers(parser):
        _help_sections(f"{prog} {name}", sub, out, min(depth + 1, 4))


def _script_help(target: str) -> str:
    """`--help` of a console script given as ``module:function`` that has no build_parser."""
    module, function = target.split(":")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        getattr(importlib.import_module(module), function)(["--help"])
    return buffer.getvalue()


def cli_page() -> str:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    out = ["# Command-line reference\n", GENERATED_NOTE.format(what="each command's `--help`")]
    for prog, target in scripts.items():
        module = importlib.import_module(target.split(":")[0])
        if hasattr(module, "build_parser"):
            _help_sections(prog, module.build_parser(), out)
        else:
            out += [f"## `{prog}`\n", "```text", _script_help(target).rstrip(), "```\n"]
    return "\n".join(out)


def main() -> None:
    with mkdocs_gen_files.open("reference/config.md", "w") as page:
        page.write(config_page())
    for path in sorted((ROOT / "inspector" / "schemas").glob("*.schema.json")):
        with mkdocs_gen_files.open(f"reference/payloads/{path.name.removesuffix('.schema.json')}.md", "w") as page:
            page.write(payload_page(path))
    with mkdocs_gen_files.open("reference/cli.md", "w") as page:
        page.write(cli_page())


main()

"""The file-system paths of a station config: where relative ones point, and which a remote may set.

A relative path written in a config file means "next to this file", whatever folder the
service was started from (``resolve_relative``); a path the file does not set keeps its
default, relative to the working directory (the service's state folder under systemd).
``confine_paths`` checks the paths of a config that came over the wire (reload-config's
inline form): each must lie inside a folder the station allows, as the ``path`` form's file must.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

# The field descriptions say it (the config reference is generated from them).
RELATIVE_TO_CONFIG = "; a relative path is taken from the config file's folder"
SET_RELATIVE_TO_CONFIG = "; relative: from the config file's folder when set there, else from the working directory"

# Every path-valued field of a station file, as its location in the file.
STATION_PATH_FIELDS: tuple[tuple[str, ...], ...] = (
    ("source", "uri"),
    ("tiling", "roi", "mask"),
    ("model", "path"),
    ("model", "onnx_dir"),
    ("model", "engine_dir"),
    ("sinks", "jsonl", "path"),
    ("sinks", "mqtt", "password_file"),
    ("sinks", "mqtt", "outbox"),
    ("sinks", "mqtt", "tls", "ca_file"),
    ("sinks", "mqtt", "tls", "cert_file"),
    ("sinks", "mqtt", "tls", "key_file"),
    ("edge", "snapshot_dir"),
    ("edge", "reload_paths"),
    ("edge", "evidence", "dir"),
    ("edge", "live_token_file"),
)


def _is_file_path(location: tuple[str, ...], value: Any, folder: Path | None = None) -> bool:
    """False for values of a path field that are not files: camera indexes, stream URLs, hub ids.

    A two-part ``model.path`` is a hub id unless ``folder`` holds it; without ``folder``
    (confinement) every model path counts as one, so a hub id is never taken for a local file."""
    if location == ("source", "uri"):
        text = str(value).strip()
        return not (isinstance(value, int) or text.isdigit() or "://" in text)
    if location == ("model", "path"):
        # A hub id (``Qwen/Qwen3-VL-4B-Instruct``) is not a path; a checkpoint path says so.
        text = str(value)
        if folder is None or text.startswith((".", "/", "~")) or len(Path(text).parts) != 2:
            return True
        return (folder / text).exists()
    return value is not None


def _set_fields(model: BaseModel, location: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], BaseModel, str]]:
    """(location, owner, field) of ``location`` when the file sets it (a default is not the file's)."""
    owner: Any = model
    for name in location[:-1]:
        if not isinstance(owner, BaseModel) or name not in owner.model_fields_set:
            return
        owner = getattr(owner, name)
    if isinstance(owner, BaseModel) and location[-1] in owner.model_fields_set:
        yield location, owner, location[-1]


def written_paths(model: BaseModel, fields: Sequence[tuple[str, ...]]) -> Iterator[tuple[str, str | Path]]:
    """(dotted field, value) of every file path the config sets (each item of a list field)."""
    for location in fields:
        for where, owner, name in _set_fields(model, location):
            value = getattr(owner, name)
            for item in value if isinstance(value, list) else [value]:
                if _is_file_path(where, item):
                    yield ".".join(where), item


def _absolute(value: str | Path, folder: Path) -> str | Path:
    path = Path(str(value)).expanduser()
    if path.is_absolute():
        return value
    joined = os.path.normpath(folder / path)  # lexical: `../models` reads as written, symlinks stay
    return Path(joined) if isinstance(value, Path) else joined


def resolve_relative(model: BaseModel, folder: Path, fields: Sequence[tuple[str, ...]] = STATION_PATH_FIELDS) -> Any:
    """``model`` with the relative paths it sets made absolute against ``folder`` (the config file's)."""
    folder = folder.expanduser().absolute()
    for location in fields:
        model = _resolve_at(model, location, folder)
    return model


def _resolve_at(model: BaseModel, location: tuple[str, ...], folder: Path) -> BaseModel:
    # The full location is kept for the file-path test (source.uri, model.path), the rest walked.
    def walk(owner: BaseModel, depth: int) -> BaseModel:
        name = location[depth]
        if name not in owner.model_fields_set:
            return owner
        value = getattr(owner, name)
        if depth < len(location) - 1:
            if not isinstance(value, BaseModel):
                return owner
            return owner.model_copy(update={name: walk(value, depth + 1)})
        items = value if isinstance(value, list) else [value]
        done = [_absolute(v, folder) if v is not None and _is_file_path(location, v, folder) else v for v in items]
        return owner.model_copy(update={name: done if isinstance(value, list) else done[0]})

    return walk(model, 0)


def outside(value: str | Path, allowed_dirs: Sequence[Path]) -> bool:
    """True when ``value`` (absolute, or relative to the first folder) resolves outside every allowed folder."""
    if not allowed_dirs or "\x00" in str(value):
        return True
    roots = [folder.resolve() for folder in allowed_dirs]
    path = Path(str(value)).expanduser()
    if not path.is_absolute():
        path = roots[0] / path
    try:
        resolved = path.resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop
        return True
    return not any(resolved.is_relative_to(root) for root in roots)


def paths_outside(
    model: BaseModel,
    allowed_dirs: Sequence[Path],
    *,
    unless_as: BaseModel | None = None,
    fields: Sequence[tuple[str, ...]] = STATION_PATH_FIELDS,
) -> list[str]:
    """The dotted fields whose paths lie outside ``allowed_dirs``; a value ``unless_as`` has too is allowed
    (an inline reload may repeat the running model's path, it may not point anywhere new)."""
    kept = {(f, str(v)) for f, v in written_paths(unless_as, fields)} if unless_as is not None else set()
    if unless_as is not None:  # the running config's values, defaults included
        for location in fields:
            owner: Any = unless_as
            for name in location:
                owner = getattr(owner, name, None)
            for item in owner if isinstance(owner, list) else [owner]:
                if item is not None:
                    kept.add((".".join(location), str(item)))
    return sorted(
        {
            f
            for f, v in written_paths(model, fields)
            # Still relative after resolve_relative: a hub id, which is no file of the allowed folders.
            if (f, str(v)) not in kept and (not Path(str(v)).expanduser().is_absolute() or outside(v, allowed_dirs))
        }
    )

"""The file-system paths of a station config: where relative ones point, and which a remote may set.

A relative path written in a config file means "next to this file", whatever folder the
service was started from (``resolve_relative``); a path the file does not set keeps its
default, relative to the working directory (the service's state folder under systemd).
``paths_outside`` checks the paths of a config that came over the wire (reload-config's
inline form): each must lie inside a folder the station allows, as the ``path`` form's file must.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

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
    ("recipes", "*", "model", "path"),
    ("recipes", "*", "model", "onnx_dir"),
    ("recipes", "*", "model", "engine_dir"),
    ("sinks", "jsonl", "path"),
    ("sinks", "mqtt", "password_file"),
    ("sinks", "mqtt", "outbox"),
    ("sinks", "mqtt", "tls", "ca_file"),
    ("sinks", "mqtt", "tls", "cert_file"),
    ("sinks", "mqtt", "tls", "key_file"),
    ("edge", "snapshot_dir"),
    ("edge", "spill_file"),
    ("edge", "reload_paths"),
    ("edge", "evidence", "dir"),
    ("edge", "live_token_file"),
    ("edge", "opcua", "certificate_file"),
    ("edge", "opcua", "private_key_file"),
    ("edge", "opcua", "trusted_clients_dir"),
    ("edge", "opcua", "users_file"),
    ("edge", "sparkplug", "bdseq_file"),
)


# Confined for an inline reload but never resolved against the config's folder: a camera feature's
# value goes to the device as written. GenICam enum entries and file names look alike (`Off`,
# `frames`), and a feature such as the pylon emulator's ImageFilename or a vendor's user-set file
# makes the camera SDK read a host file, so every string feature value counts as a path: an
# inline config may repeat the running value or name a file inside the allowed folders; any other
# string (an enum too) needs the ``path`` form, a config file the station's folders hold.
CAMERA_FEATURES = ("source", "camera", "features")
REMOTE_CONFINED_FIELDS: tuple[tuple[str, ...], ...] = (*STATION_PATH_FIELDS, (*CAMERA_FEATURES, "*"))


def genicam_producer(uri: str) -> str | None:
    """The GenTL producer (``.cti``) a ``genicam://PRODUCER?...`` URI names; None for any other URI."""
    parts = urlsplit(uri.strip())
    return unquote(parts.netloc + parts.path) if parts.scheme.lower() == "genicam" else None


def _named_file(location: tuple[str, ...], value: Any) -> Any:
    """The file a path field's value names, or None: camera indexes, stream URLs and numbers name none.
    A ``genicam://`` source names its producer, a shared library the source loads (code it runs)."""
    if location[:-1] == CAMERA_FEATURES:
        return value if isinstance(value, str) else None
    if location[-2:] == ("source", "uri"):
        text = str(value).strip()
        if isinstance(value, int) or text.isdigit():
            return None
        if "://" in text:
            return genicam_producer(text)
    return value


def _is_hub_id(text: str, folder: Path) -> bool:
    """``owner/name`` (``Qwen/Qwen3-VL-4B-Instruct``) that is no folder next to the config: a hub id.
    Confinement never asks: there every model path counts as a file, so a hub id is never allowed."""
    return not text.startswith((".", "/", "~")) and len(Path(text).parts) == 2 and not (folder / text).exists()


PathVisitor = Callable[[tuple[str, ...], Any], Any]


def _walk(
    owner: Any, location: tuple[str, ...], visit: PathVisitor, *, only_set: bool, at: tuple[str, ...] = ()
) -> Any:
    """``owner`` with ``visit(where, value)`` applied to each value at ``location`` (``*``: every key of a
    mapping); with ``only_set``, only where the file wrote it (a default is not the file's)."""
    if not location:
        items = owner if isinstance(owner, list) else [owner]
        done = [visit(at, item) if item is not None else item for item in items]
        return done if isinstance(owner, list) else done[0]
    name, rest = location[0], location[1:]
    if name == "*":
        if not isinstance(owner, dict):
            return owner
        return {key: _walk(value, rest, visit, only_set=only_set, at=(*at, key)) for key, value in owner.items()}
    if not isinstance(owner, BaseModel) or name not in type(owner).model_fields:
        return owner
    if only_set and name not in owner.model_fields_set:
        return owner
    value = getattr(owner, name)
    new = _walk(value, rest, visit, only_set=only_set, at=(*at, name))
    return owner if new is value else owner.model_copy(update={name: new})


def written_paths(model: BaseModel, fields: Sequence[tuple[str, ...]]) -> list[tuple[str, str | Path]]:
    """(dotted field, value) of every file path the config sets (each item of a list field)."""
    return _named_files(model, fields, only_set=True)


def _named_files(model: BaseModel, fields: Sequence[tuple[str, ...]], *, only_set: bool) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []

    def note(where: tuple[str, ...], value: Any) -> Any:
        named = _named_file(where, value)
        if named is not None:
            found.append((".".join(where), named))
        return value

    for location in fields:
        _walk(model, location, note, only_set=only_set)
    return found


def _absolute(value: str | Path, folder: Path) -> str | Path:
    path = Path(str(value)).expanduser()
    if path.is_absolute():
        return value
    joined = os.path.normpath(folder / path)  # lexical: `../models` reads as written, symlinks stay
    return Path(joined) if isinstance(value, Path) else joined


def resolve_relative(model: BaseModel, folder: Path, fields: Sequence[tuple[str, ...]] = STATION_PATH_FIELDS) -> Any:
    """``model`` with the relative paths it sets made absolute against ``folder`` (the config file's)."""
    folder = folder.expanduser().absolute()

    def absolute(where: tuple[str, ...], value: Any) -> Any:
        if _named_file(where, value) != value:  # no file, or a URI naming one (kept as written)
            return value
        if where[-2:] == ("model", "path") and _is_hub_id(str(value), folder):
            return value
        return _absolute(value, folder)

    for location in fields:
        model = _walk(model, location, absolute, only_set=True)
    return model


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
    fields: Sequence[tuple[str, ...]] = REMOTE_CONFINED_FIELDS,
) -> list[str]:
    """The dotted fields whose paths lie outside ``allowed_dirs``; a value ``unless_as`` has too is allowed
    (an inline reload may repeat the running model's path, it may not point anywhere new)."""
    # The running config's values, defaults included.
    running = _named_files(unless_as, fields, only_set=False) if unless_as is not None else []
    kept = {(f, str(v)) for f, v in running}
    return sorted(
        {
            f
            for f, v in written_paths(model, fields)
            # Still relative after resolve_relative: a hub id, which is no file of the allowed folders.
            if (f, str(v)) not in kept and (not Path(str(v)).expanduser().is_absolute() or outside(v, allowed_dirs))
        }
    )

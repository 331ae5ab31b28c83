"""reload-config: turn a requested config into a ready Inspector, or a rejection that changes nothing.

Validation happens in layers, cheapest first: the schema (``parse_config``), the sections
a running service cannot swap (station identity, sinks and the service's own edge
settings: they are the MQTT session, the outbox, the metrics server and the queues), then
building the inspector, which loads a new model only when the model itself changed (path,
backend, graphs, dtype, device). The caller then tries the
candidate on a frame before swapping it in, so a config that validates but cannot
inspect (say, a tile size the vision preprocessing refuses) is rejected too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from edge.commands import CommandRejected, ReloadConfigCommand
from inspector.classify import TileClassifier
from inspector.config import RectROI, StationFile
from inspector.config_paths import paths_outside, resolve_relative
from inspector.errors import InspectorError
from inspector.pipeline import Inspector, build_inspector
from inspector.runtime import Overrides  # the command-line overrides replay has too

log = logging.getLogger(__name__)

# Model fields that need the weights loaded again; the others only change how they are used.
MODEL_LOAD_FIELDS = ("path", "backend", "onnx_dir", "engine_dir", "dtype", "device")
# Sections bound to resources opened at start (the MQTT session, the outbox, the JSONL file,
# the metrics server, the worker queues).
RESTART_ONLY_SECTIONS = ("station", "sinks", "edge")


def confine_reload_path(requested: str, allowed_dirs: Sequence[Path]) -> Path:
    """The file a remote reload-config may read: inside one of ``allowed_dirs``, symlinks resolved.

    Relative paths are taken from the first allowed folder (the config's own). The check runs
    on the fully resolved path before anything is opened, so ``..``, absolute paths and symlinks
    pointing out of the folders are all refused alike, and the answer never says whether a file
    outside exists. The refusal names the field and the rule, not the path.
    """
    rule = "path: must name a .yaml/.yml file inside the config file's folder or an edge.reload_paths folder"
    if not allowed_dirs or "\x00" in requested:
        raise CommandRejected(f"reload-config refused: {rule}", "reload-config")
    roots = [folder.resolve() for folder in allowed_dirs]
    candidate = Path(requested)
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop
        raise CommandRejected(f"reload-config refused: {rule}", "reload-config") from None
    inside = any(resolved.is_relative_to(root) for root in roots)
    if not inside or resolved.suffix.lower() not in (".yaml", ".yml"):
        raise CommandRejected(f"reload-config refused: {rule}", "reload-config")
    if not resolved.is_file():
        raise CommandRejected("reload-config: path: no such config file in the allowed folders", "reload-config")
    return resolved


def requested_config(
    command: ReloadConfigCommand,
    overrides: Overrides,
    *,
    allowed_dirs: Sequence[Path] = (),
    current: StationFile | None = None,
) -> StationFile:
    """The validated config the command asks for, with the command-line overrides applied.

    Relative paths are taken from the requested file's folder (the ``path`` form) or from the
    config's own folder (the inline form). An inline config is written by whoever may send
    commands, so each path it sets (model, graphs, engines, source file, ROI mask, ...) must lie
    inside the allowed folders, as the ``path`` form's file must, unless it is the running
    config's own value: a remote may change the prompt, not point the station at other files.

    Every rejection is a remote answer: it names the field and the rule, never a value read
    from the file (a YAML next door may hold secrets), nor its text.
    """
    if command.path is not None:
        path = confine_reload_path(command.path, allowed_dirs)
        data, source, folder = _read_yaml(path), "reload-config: " + path.name, path.parent
    else:
        data, source = command.config, "reload-config"
        folder = allowed_dirs[0] if allowed_dirs else None
    if not isinstance(data, dict):
        raise CommandRejected(f"{source}: the top level must be a mapping of sections", command.command)
    try:
        config = StationFile.model_validate(data)
    except ValidationError as error:
        raise CommandRejected(redacted_validation_error(source, error), command.command) from None
    if folder is not None:
        config = resolve_relative(config, folder)
    if command.path is None:
        refused = paths_outside(config, allowed_dirs, unless_as=current)
        if refused:
            raise CommandRejected(
                f"reload-config refused: {', '.join(refused)}: an inline config may only name files inside the "
                "config file's folder or an edge.reload_paths folder (or keep the running config's own)",
                command.command,
            )
    try:
        return overrides.apply(config)
    except (InspectorError, ValueError):  # a CLI override that the new config makes invalid
        log.warning("reload-config: a command-line override does not fit the requested config", exc_info=True)
        raise CommandRejected(
            "reload-config: the command-line overrides (--model, --backend, --source) do not fit the requested "
            "config; see the service log",
            command.command,
        ) from None


def redacted_validation_error(source: str, error: ValidationError) -> str:
    """``field.path: rule`` per problem, with no input value (a remote requester must not read the file)."""
    problems = []
    for item in error.errors():
        parts = [str(part) for part in item["loc"]]
        if parts[:1] == ["model"] and len(parts) > 2:
            del parts[1]  # the backend tag pydantic inserts, not a key the user wrote
        loc = ".".join(
            p for i, p in enumerate(parts) if not (i > 0 and parts[i - 1] == "roi" and p in ("rect", "mask"))
        )
        kind = item["type"]
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind.startswith("union_tag"):
            message = "unknown or missing backend"
        else:
            message = item["msg"].removeprefix("Value error, ")
            got = item.get("input")
            if isinstance(got, (str, int, float)) and not isinstance(got, bool) and str(got) and str(got) in message:
                message = message.replace(str(got), "<value>")  # pydantic sometimes quotes the input
        problems.append(f"{loc or '(top level)'}: {message}")
    return f"{source}: invalid configuration: " + "; ".join(problems)


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CommandRejected(f"reload-config: {path.name}: not valid YAML{where}", "reload-config") from None
    except (OSError, UnicodeDecodeError):
        raise CommandRejected(f"reload-config: {path.name}: not a readable UTF-8 file", "reload-config") from None


def check_swappable(current: StationFile, candidate: StationFile) -> None:
    triggering = ("trigger", "trigger_frames", "trigger_timeout_s", "trigger_duplicate_window_s", "trigger_backlog")
    if any(getattr(current.source, f) != getattr(candidate.source, f) for f in triggering):
        raise CommandRejected(
            "reload-config cannot change source.trigger settings while running (they are the trigger "
            "subscription and its bookkeeping); restart the service for that",
            "reload-config",
        )
    for section in RESTART_ONLY_SECTIONS:
        if getattr(current, section) != getattr(candidate, section):
            raise CommandRejected(
                f"reload-config cannot change '{section}' while running (it is bound to the MQTT session, "
                "the outbox and the output files); restart the service for that",
                "reload-config",
            )


def trial_frame_size(inspector: Inspector, default: tuple[int, int] = (640, 480)) -> tuple[int, int]:
    """A frame size the inspector's tiling accepts, for a warm-up or trial frame before any real one.

    A rect ROI must lie inside the frame and a mask ROI is the camera's resolution, so
    a fixed 640x480 would refuse a perfectly good config for a 5 MP camera.
    """
    mask = getattr(inspector.planner, "roi_mask", None)
    if mask is not None:
        return int(mask.shape[1]), int(mask.shape[0])
    roi = inspector.config.tiling.roi
    if isinstance(roi, RectROI):
        return max(default[0], roi.rect[2]), max(default[1], roi.rect[3])
    return default


def needs_model_load(current: StationFile, candidate: StationFile) -> bool:
    # Backend-specific fields (onnx_dir, engine_dir) exist only on their backend's config.
    return any(getattr(current.model, f, None) != getattr(candidate.model, f, None) for f in MODEL_LOAD_FIELDS)


def build_candidate(running: Inspector, candidate: StationFile, recipe: str | None = None) -> Inspector:
    """An Inspector for ``recipe`` of ``candidate`` (default: its ``default_recipe``), reusing the loaded
    model when only prompts/tiling/thresholds differ."""
    recipe = candidate.default_recipe if recipe is None else recipe
    applied = candidate.for_recipe(recipe)
    try:
        if needs_model_load(running.config, applied):
            log.info("loading model %s (%s) for recipe %s", applied.model.path, applied.model.backend, recipe)
            return build_inspector(candidate, recipe)
        model = applied.model
        classifier = TileClassifier(
            running.backend,
            running.classifier.tokenizer,
            applied.inspection,
            batch_size=model.batch_size,
            reasoning=model.reasoning,
            max_reasoning_tokens=model.max_reasoning_tokens,
        )
        return Inspector(applied, running.backend, classifier, recipe)
    except Exception as error:  # noqa: BLE001 - a model that fails to load must not take the service down
        # The details (paths, values) go to the local log only; the remote answer names the section.
        log.error("reload-config: building the new pipeline failed: %s", error, exc_info=True)
        raise CommandRejected(
            f"reload-config: the model section could not be loaded ({type(error).__name__}); see the service log",
            "reload-config",
        ) from None

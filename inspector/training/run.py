"""A whole training run: data -> tiles -> model -> epochs (checkpointed) -> an ordinary checkpoint + training.json.

Output directory ``out``:

- the trained model as an ordinary Qwen3-VL checkpoint (config, safetensors, tokenizer,
  preprocessor config): LoRA is merged in, so replay, ``export onnx`` and the edge service load it;
- ``adapter/`` (LoRA only): the peft adapter, to apply to the base again;
- ``training.json``: base model identity and sha256, data fingerprints, station config, options,
  seed, per-epoch metrics, best epoch;
- ``line_inspector_demo_model.json`` when the base was the tiny random model (verdicts say demo_model);
- ``state/checkpoint.pt``: the state after the last finished epoch, for ``--resume``.

Final files are written beside, then moved into place, training.json last: a killed run never
leaves something that looks like a finished model.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from inspector.config import StationFile
from inspector.models import DEMO_MARKER, RANDOM_MARKER, is_demo_model, is_random_model
from inspector.training.data import TileSet, collect_tiles
from inspector.training.trainer import Trainer, TrainingError, TrainOptions, TrainState, history_json

log = logging.getLogger(__name__)

TRAINING_FILE = "training.json"
TRAINING_FORMAT = 1
CHECKPOINT = Path("state") / "checkpoint.pt"
_COPIED = ("preprocessor_config.json", "chat_template.jinja")


@dataclass(frozen=True)
class DataSummary:
    path: str
    fingerprint: str
    frames: int


@dataclass
class PreparedData:
    train: TileSet
    val: TileSet
    sources: list[DataSummary]
    val_sources: list[DataSummary]


def prepare_data(
    config: StationFile,
    data: Sequence[Path],
    *,
    val_data: Sequence[Path] = (),
    val_fraction: float = 0.2,
    seed: int = 0,
    max_ok_tiles: int = 6000,
    max_val_ok_tiles: int = 500,
    class_map: dict[str, str] | None = None,
) -> PreparedData:
    """Load and split the data sets (by clip or image, never by tile) and cut their tiles.

    Validation keeps every defect tile but at most ``max_val_ok_tiles`` OK tiles (a seeded
    sample): it runs every epoch, and AUROC needs the ranking, not every OK tile.
    """
    from inspector.datasets import load_dataset, split_dataset
    from inspector.datasets.base import combine
    from inspector.tiling import TilePlanner

    loaded = [load_dataset(p, config, class_map) for p in expand_data_paths(data)]
    sources = [DataSummary(d.source, d.fingerprint(), len(d)) for d in loaded]
    dataset = combine(loaded)
    if val_data:
        val_loaded = [load_dataset(p, config, class_map) for p in expand_data_paths(val_data)]
        val_sources = [DataSummary(d.source, d.fingerprint(), len(d)) for d in val_loaded]
        train_set, val_set = dataset, combine(val_loaded)
    else:
        units = {item.group for item in dataset.images}
        train_set, val_set = split_dataset(dataset, val_fraction, seed, by="group" if len(units) > 1 else "image")
        val_sources = [DataSummary(val_set.source, val_set.fingerprint(), len(val_set))]
    planner = TilePlanner.from_config(config.tiling)
    train = collect_tiles(train_set, planner, max_ok=max_ok_tiles, seed=seed)
    val = collect_tiles(val_set, planner, max_ok=max_val_ok_tiles, seed=seed + 1)
    return PreparedData(train, val, sources, val_sources)


def expand_data_paths(paths: Sequence[Path]) -> list[Path]:
    """A folder holding clip folders (``demo/train``: one labels.json each) stands for all of them."""
    expanded: list[Path] = []
    for path in paths:
        path = Path(path)
        children = sorted(p.parent for p in path.glob("*/labels.json")) if path.is_dir() else []
        if path.is_dir() and not (path / "labels.json").exists() and children:
            expanded.extend(children)
        else:
            expanded.append(path)
    return expanded


def load_base(base: str, options: TrainOptions) -> tuple[Any, Any]:
    from inspector.models import load_model

    loaded = load_model(base, dtype=options.dtype if options.device.startswith("cuda") else "float32",
                        device=options.device)  # fmt: skip
    model = loaded.model
    if options.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model, loaded.tokenizer


def prepare_model(model: Any, options: TrainOptions) -> Any:
    import torch

    from inspector.training.lora import add_lora
    from inspector.training.trainer import freeze_for_method

    torch.manual_seed(options.seed)  # LoRA's A matrices are drawn here
    if options.method == "lora":
        model = add_lora(model, rank=options.lora_rank, alpha=options.lora_alpha, train_vision=options.train_vision)
        if options.gradient_checkpointing:
            model.enable_input_require_grads()
    else:
        freeze_for_method(model, options)
    return model


def check_output(out: Path, resume: bool) -> None:
    if not out.exists():
        return
    if (out / "config.json").exists() and not (out / TRAINING_FILE).exists():
        raise TrainingError(
            f"{out} already holds a model that `inspector train` did not write",
            "choose a new --out directory; refusing to overwrite a checkpoint",
        )
    if (out / CHECKPOINT).exists() and not resume:
        raise TrainingError(
            f"{out} holds an unfinished or earlier training run ({CHECKPOINT})",
            "add --resume to continue it, or choose a new --out directory",
        )


def save_checkpoint(trainer: Trainer, out: Path) -> None:
    import torch

    path = out / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(trainer.checkpoint(), partial)
    os.replace(partial, path)


def load_checkpoint(out: Path) -> dict[str, Any] | None:
    import torch

    path = out / CHECKPOINT
    if not path.exists():
        return None
    # weights_only: the state is tensors, numbers, strings, lists and dicts; anything else in the
    # file (a pickled object, i.e. code run on load) is refused instead of executed.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise TrainingError(
            f"{path} holds more than training state (refused to unpickle it: {str(error).splitlines()[0]})",
            "delete that state folder and train afresh into a new --out; never resume from a file you did not write",
        ) from None


def write_model(
    trainer: Trainer,
    base: str,
    out: Path,
    config_source: str,
    prepared: PreparedData,
    options: TrainOptions,
) -> dict[str, Any]:
    """Best epoch's weights -> ``out`` as an ordinary checkpoint (LoRA merged, adapter beside it) + training.json."""
    from inspector.artifacts.identity import identify_checkpoint
    from inspector.training.lora import merge
    from inspector.training.trainer import load_trainable_state

    state = trainer.state
    if state.best_trainable is not None:
        load_trainable_state(trainer.model, state.best_trainable, trainer.option_rows)
    if trainer.option_rows is not None:
        trainer.option_rows.merge()  # the trained letters into the embedding table: an ordinary checkpoint
    staging = out / ".writing"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model = trainer.model
    if options.method == "lora":
        model.save_pretrained(staging / "adapter")
        model = merge(model)
    model.save_pretrained(staging)
    trainer.tokenizer.save_pretrained(staging)
    base_dir = Path(base)
    for name in _COPIED:
        if (base_dir / name).is_file() and not (staging / name).exists():
            shutil.copy2(base_dir / name, staging / name)
    demo = is_random_model(base_dir) or is_demo_model(base_dir)
    if demo:
        (staging / DEMO_MARKER).write_text(json.dumps({
            "demo_model": True,
            "base_random_weights": is_random_model(base_dir),
            "warning": "trained from a tiny random model on synthetic demo footage: a DEMO, not a real checkpoint",
        }, indent=2) + "\n")  # fmt: skip
    base_identity = identify_checkpoint(base_dir) if base_dir.is_dir() else None
    record = training_record(trainer, base, base_identity, demo, config_source, prepared, options)
    for item in sorted(staging.iterdir()):
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()
    for stale in (RANDOM_MARKER,) + (() if demo else (DEMO_MARKER,)):
        (out / stale).unlink(missing_ok=True)
    partial = out / (TRAINING_FILE + ".partial")
    partial.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, out / TRAINING_FILE)
    return record


def training_record(
    trainer: Trainer,
    base: str,
    base_identity: Any,
    demo: bool,
    config_source: str,
    prepared: PreparedData,
    options: TrainOptions,
) -> dict[str, Any]:
    state: TrainState = trainer.state
    best = state.best_metrics()
    versions = {"python": sys.version.split()[0]}
    for name in ("line-inspector", "torch", "transformers", "peft", "scikit-learn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "format": TRAINING_FORMAT,
        "demo_model": demo,
        "base_model": {"path": str(base), **(base_identity.to_json() if base_identity else {"name": base})},
        "data": [asdict(s) for s in prepared.sources],
        "validation_data": [asdict(s) for s in prepared.val_sources],
        "tiles": {"train": prepared.train.counts(), "validation": prepared.val.counts()},
        "config": {"path": config_source, "station": trainer.config.model_dump(mode="json")},
        "options": asdict(options),
        "seed": options.seed,
        "epochs": history_json(state.history),
        "best_epoch": state.best_epoch,
        "stopped_early": state.stopped_early,
        "plateau_restarts": list(state.restarts),
        "best": asdict(best) if best else None,
        "versions": versions,
    }


@contextmanager
def deterministic_kernels() -> Iterator[None]:
    """torch's deterministic kernels while training, then the caller's setting back.

    Measured on the demo: with 2 CPU threads two runs of the same seed gave different weights
    (a multi-threaded kernel accumulates in a varying order), with these the same weights at
    the same speed. warn_only: an op without a deterministic version (some CUDA ones) warns
    instead of failing the run.
    """
    import torch

    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def train_model(
    config: StationFile,
    config_source: str,
    base: str,
    prepared: PreparedData,
    out: Path,
    options: TrainOptions,
    *,
    resume: bool = False,
    on_step: Callable[[int, float, float | None], None] | None = None,
    on_epoch: Callable[[Trainer], None] | None = None,
    stop_after_epoch: int | None = None,
) -> tuple[Trainer, dict[str, Any] | None]:
    """Train, checkpointing each epoch into ``out/state``; write the model unless stopped early."""
    out = Path(out)
    check_output(out, resume)
    model, tokenizer = load_base(base, options)
    model = prepare_model(model, options)
    trainer = Trainer(model, tokenizer, config, prepared.train, prepared.val, options)
    saved = load_checkpoint(out) if resume else None
    if resume and saved is None:
        log.info("no checkpoint in %s: starting afresh", out)
    if saved is not None:
        trainer.restore(saved)

    def after_epoch(t: Trainer) -> None:
        save_checkpoint(t, out)
        if on_epoch is not None:
            on_epoch(t)

    out.mkdir(parents=True, exist_ok=True)
    with deterministic_kernels():
        trainer.run(on_step=on_step, on_epoch=after_epoch, stop_after_epoch=stop_after_epoch)
    if trainer.state.epoch < trainer.state.planned_epochs(options) and not trainer.state.stopped_early:
        return trainer, None
    return trainer, write_model(trainer, base, out, config_source, prepared, options)

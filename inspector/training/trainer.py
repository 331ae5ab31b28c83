"""`inspector train`: adapt a Qwen3-VL checkpoint to a station's labelled tiles.

One epoch = ``steps_per_epoch`` class-balanced, augmented batches, then validation (tile
AUROC, NG vs OK, by scikit-learn). The best epoch's weights are kept. State is checkpointed
after every epoch (model, optimizer, scheduler, RNG, history) so ``resume`` after a kill
continues exactly: each epoch's batches and augmentations come from generators seeded by
(seed, epoch), and the model has no dropout.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from inspector.config import StationFile
from inspector.errors import InspectorError
from inspector.explanation_text import explanation_parts, taught_texts
from inspector.training.data import TileSet, augment, sampling_weights
from inspector.training.objective import (
    TrainingPrompt,
    explanation_batch,
    option_logits,
    taught_word_ids,
    verdict_and_explanation_loss,
    verdict_loss,
)
from inspector.training.option_rows import OptionRows

log = logging.getLogger(__name__)


class TrainingError(InspectorError):
    """Training cannot start or continue as asked."""


@dataclass(frozen=True)
class TrainOptions:
    method: Literal["full", "lora"] = "full"
    train_vision: bool = False  # lora only: full always trains the vision tower
    epochs: int = 8
    steps_per_epoch: int = 75
    lr: float = 1e-3
    batch: int = 16
    seed: int = 0
    defect_share: float = 0.5  # share of each batch on defect tiles
    binary_epochs: int = 0  # first epochs train OK vs defect only (a curriculum)
    explain: bool = False
    explain_weight: float = 0.5
    warmup_steps: int = 30
    lora_rank: int = 16
    lora_alpha: int = 32
    device: str = "cpu"
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    augment: bool = True
    photometric: float = 0.05  # brightness/contrast jitter (see training.data.augment)
    vision_lr_scale: float = 1.0  # the vision tower's learning rate = lr x this
    option_rows: bool = True  # full only: train the answer letters' embedding rows (training.option_rows)
    word_rows: bool = False  # with option_rows and explain: the explanation words' rows train too
    patience: int = 0  # stop after this many epochs without a better validation score, once learnt (0: never)
    # Plateau escape (Trainer._plateau_restart): a run whose validation AUROC is still under this at the end of
    # its OK-vs-defect stage re-warms the learning rate, learns OK vs defect again and gets extra epochs.
    plateau_auroc: float = 0.0  # 0: never
    plateau_restarts: int = 1  # at most this many restarts
    plateau_epochs: int = 2  # epochs added by each restart

    def resumable_with(self, other: TrainOptions) -> bool:
        """Same run: everything but the epoch count (a resumed run may be extended)."""
        mine, theirs = asdict(self), asdict(other)
        mine.pop("epochs"), theirs.pop("epochs")
        return mine == theirs


@dataclass
class EpochMetrics:
    epoch: int
    steps: int
    train_loss: float
    val_loss: float
    val_auroc: float | None
    val_class_accuracy: float | None
    lr: float
    seconds: float
    explanation_loss: float | None = None


@dataclass
class TrainState:
    """Everything the loop needs to continue after a kill."""

    epoch: int = 0  # epochs completed
    history: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int | None = None
    best_trainable: dict[str, Any] | None = None
    stopped_early: bool = False
    restarts: list[int] = field(default_factory=list)  # epochs after which the plateau restart re-warmed

    def planned_epochs(self, options: TrainOptions) -> int:
        """The run's length: the asked epochs plus those each plateau restart added."""
        return options.epochs + len(self.restarts) * options.plateau_epochs

    def binary_epoch(self, options: TrainOptions, epoch: int) -> bool:
        """Whether ``epoch`` learns OK vs defect only: the first ``binary_epochs``, and as many after a restart."""
        starts = [0, *self.restarts]
        return any(start < epoch <= start + options.binary_epochs for start in starts)

    def best_metrics(self) -> EpochMetrics | None:
        return next((m for m in self.history if m.epoch == self.best_epoch), None)


Progress = Callable[[int, float, float | None], None]  # (steps done, running loss, last val AUROC)


OPTION_ROWS_KEY = "option_rows.delta"  # the letters' delta beside the model's parameters in a saved state


def trainable_state(model: Any, option_rows: OptionRows | None = None) -> dict[str, Any]:
    state = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    if option_rows is not None:
        state[OPTION_ROWS_KEY] = option_rows.delta.detach().clone()
    return state


def load_trainable_state(model: Any, state: dict[str, Any], option_rows: OptionRows | None = None) -> None:
    import torch

    parameters = dict(model.named_parameters())
    if option_rows is not None:
        parameters[OPTION_ROWS_KEY] = option_rows.delta
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value)


def validation_score(metrics: EpochMetrics) -> float:
    """What picks the kept epoch: tile AUROC (NG vs OK) first, the right class worth a quarter of it."""
    auroc = metrics.val_auroc if metrics.val_auroc is not None else 0.0
    accuracy = metrics.val_class_accuracy if metrics.val_class_accuracy is not None else 0.0
    return auroc + 0.25 * accuracy


def freeze_for_method(model: Any, options: TrainOptions) -> None:
    """Full: everything but the token embeddings (151,936 rows; tied to the LM head in small models)."""
    if options.method != "full":
        return
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("embed_tokens" not in name and "lm_head" not in name)


def _schedule(options: TrainOptions, state: TrainState) -> Callable[[int], float]:
    """Warm-up then cosine to 10 %, over the planned steps; a plateau restart starts both again from there."""

    def factor(step: int) -> float:
        total = state.planned_epochs(options) * options.steps_per_epoch
        starts = (epoch * options.steps_per_epoch for epoch in state.restarts)
        start = max((s for s in starts if s <= step), default=0)
        local = step - start
        if local < options.warmup_steps:
            return (local + 1) / options.warmup_steps
        progress = (local - options.warmup_steps) / max(1, total - start - options.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))  # cosine to a 10 % floor

    return factor


def device_precision(device: str) -> dict[str, Any]:
    """TrainOptions fields a device implies: CUDA trains under bf16 autocast with gradient checkpointing
    (activation memory of a 4B/8B model); CPU in float32 without (the tiny models need neither)."""
    cuda = device.startswith("cuda")
    return {"dtype": "bfloat16" if cuda else "float32", "gradient_checkpointing": cuda}


def autocast_for(dtype: str, device: str) -> Any:
    """bf16 autocast on CUDA when asked, else nothing (CPU autocast would change the numbers it is tested on)."""
    import contextlib

    import torch

    if dtype == "bfloat16" and device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, 1])


class Trainer:
    """The loop over epochs for one model, prompt and pair of tile sets."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: StationFile,
        train_tiles: TileSet,
        val_tiles: TileSet,
        options: TrainOptions,
    ) -> None:
        import torch

        if not len(train_tiles):
            raise TrainingError("no training tile left after labelling", "add labelled frames or images")
        if not len(val_tiles):
            raise TrainingError("no validation tile", "raise --val-fraction or pass more data")
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.train_tiles, self.val_tiles = train_tiles, val_tiles
        self.options = options
        self.prompt = TrainingPrompt.build(tokenizer, config.inspection, config.tiling.tile)
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        if not self.parameters:
            raise TrainingError("nothing to train: every parameter is frozen")
        words = (
            taught_word_ids(tokenizer, self.prompt, taught_texts(config.inspection))
            if options.explain and options.word_rows
            else []
        )
        self.option_rows = (
            OptionRows(model, self.prompt.prompt.option_ids, words)
            if options.option_rows and options.method == "full"
            else None
        )
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        vision = [p for n, p in named if ".visual." in f".{n}"]
        rest = [p for n, p in named if ".visual." not in f".{n}"]
        if self.option_rows is not None:
            rest.append(self.option_rows.delta)
            self.parameters.append(self.option_rows.delta)
        groups = [{"params": rest, "lr": options.lr}]
        if vision:
            groups.append({"params": vision, "lr": options.lr * options.vision_lr_scale})
        self.optimizer = torch.optim.AdamW(groups, lr=options.lr, weight_decay=0.0)
        self.state = TrainState()
        # The schedule reads the state (its restarts) when called: restore() replaces the state's fields in place.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(options, self.state))
        self.weights = sampling_weights(train_tiles.labels, options.defect_share)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> dict[str, Any]:
        import torch

        return {
            "options": asdict(self.options),
            "trainable": trainable_state(self.model, self.option_rows),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.state.epoch,
            "history": [asdict(m) for m in self.state.history],
            "best_epoch": self.state.best_epoch,
            "best_trainable": self.state.best_trainable,
            "stopped_early": self.state.stopped_early,
            "restarts": list(self.state.restarts),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        import torch

        previous = TrainOptions(**saved["options"])
        if not previous.resumable_with(self.options):
            changed = sorted(
                k for k, v in asdict(self.options).items() if saved["options"].get(k) != v and k != "epochs"
            )
            raise TrainingError(
                f"cannot resume: the checkpoint was trained with other settings ({', '.join(changed)})",
                "resume with the same flags (only --epochs may grow), or start afresh in a new --out",
            )
        load_trainable_state(self.model, saved["trainable"], self.option_rows)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        restored = TrainState(
            epoch=int(saved["epoch"]),
            history=[EpochMetrics(**m) for m in saved["history"]],
            best_epoch=saved["best_epoch"],
            best_trainable=saved["best_trainable"],
            stopped_early=bool(saved.get("stopped_early", False)),
            restarts=[int(e) for e in saved.get("restarts", [])],
        )
        self.state.__dict__.update(restored.__dict__)  # in place: the schedule holds this object

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        *,
        on_step: Progress | None = None,
        on_epoch: Callable[[Trainer], None] | None = None,
        stop_after_epoch: int | None = None,
    ) -> TrainState:
        """Train the remaining epochs; ``on_epoch`` is called after each (the command checkpoints there)."""
        options = self.options
        while self.state.epoch < self.state.planned_epochs(options) and not self.state.stopped_early:
            epoch = self.state.epoch + 1
            began = time.perf_counter()
            losses, explain_losses = self._train_epoch(epoch, on_step)
            val_loss, auroc, class_accuracy = self.validate()
            metrics = EpochMetrics(
                epoch=epoch,
                steps=options.steps_per_epoch,
                train_loss=round(float(np.mean(losses)), 6),
                val_loss=round(val_loss, 6),
                val_auroc=None if auroc is None else round(auroc, 6),
                val_class_accuracy=None if class_accuracy is None else round(class_accuracy, 6),
                lr=float(self.scheduler.get_last_lr()[0]),
                seconds=round(time.perf_counter() - began, 3),
                explanation_loss=round(float(np.mean(explain_losses)), 6) if explain_losses else None,
            )
            self.state.history.append(metrics)
            self.state.epoch = epoch
            if self._is_best(metrics):
                self.state.best_epoch = epoch
                self.state.best_trainable = trainable_state(self.model, self.option_rows)
            log.info(
                "epoch %d: loss %.4f, val loss %.4f, val AUROC %s",
                epoch,
                metrics.train_loss,
                val_loss,
                metrics.val_auroc,
            )
            if on_epoch is not None:
                on_epoch(self)
            if self._plateau_restart():
                log.info("epoch %d: validation AUROC still under %.2f (the plateau): learning rate re-warmed, "
                         "OK vs defect again, %d epochs added", epoch, options.plateau_auroc,
                         options.plateau_epochs)  # fmt: skip
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
            if self._should_stop():
                log.info("stopping early after epoch %d: no better validation score since epoch %s",
                         epoch, self.state.best_epoch)  # fmt: skip
                self.state.stopped_early = True
                break
        return self.state

    def _is_best(self, metrics: EpochMetrics) -> bool:
        """The better validation score, but a class-stage epoch always above an OK-vs-defect one: the latter
        spreads the defect mass evenly over the classes, no class reaches its threshold, nothing is NG."""
        best = self.state.best_metrics()
        if best is None:
            return True
        return self._rank(metrics) > self._rank(best)

    def _rank(self, metrics: EpochMetrics) -> tuple[bool, float, float]:
        classes = not self.state.binary_epoch(self.options, metrics.epoch)
        return classes, validation_score(metrics), -metrics.val_loss

    def _plateau_restart(self) -> bool:
        """At the end of an OK-vs-defect stage, a run whose best validation AUROC is under ``plateau_auroc`` is
        on the plateau that precedes learning (DESIGN.md): the rest of the cosine would only decay on it.
        Record a restart (the schedule re-warms from here, the next epochs learn OK vs defect, the run is
        ``plateau_epochs`` longer); at most ``plateau_restarts`` times."""
        options, state = self.options, self.state
        if not options.plateau_auroc or len(state.restarts) >= options.plateau_restarts:
            return False
        stage_end = max(state.restarts, default=0) + max(1, options.binary_epochs)
        best = state.best_metrics()
        if state.epoch != stage_end or best is None or (best.val_auroc or 0.0) >= options.plateau_auroc:
            return False
        state.restarts.append(state.epoch)
        return True

    def _should_stop(self) -> bool:
        """Early stop only once something was learnt (AUROC >= 0.9): before that the run may still be on
        the plateau that precedes the step up (DESIGN.md), and stopping there would keep the prior."""
        best = self.state.best_metrics()
        patience = self.options.patience
        if not patience or best is None or (best.val_auroc or 0.0) < 0.9:
            return False
        if self.state.binary_epoch(self.options, best.epoch):  # the classes are not learnt yet
            return False
        return self.state.epoch - best.epoch >= patience

    def _train_epoch(self, epoch: int, on_step: Progress | None) -> tuple[list[float], list[float]]:
        import torch

        options = self.options
        rng = _epoch_rng(options.seed, epoch)
        binary = self.state.binary_epoch(options, epoch)
        self.model.train()
        losses: list[float] = []
        explain_losses: list[float] = []
        tiles = self.train_tiles
        for _ in range(options.steps_per_epoch):
            rows = rng.choice(len(tiles), size=options.batch, p=self.weights)
            pixels, where = tiles.pixels[rows], tiles.where[rows]
            if options.augment:  # the defects' places move with the pixels (flips): the words name them
                pixels, where = augment(pixels, rng, where=where, photometric=options.photometric)
            labels = torch.from_numpy(tiles.labels[rows]).to(self.model.device)
            if options.explain:
                inspection = self.config.inspection
                texts = [
                    explanation_parts(inspection, int(tiles.labels[r]), tuple(place), float(tiles.extent[r]))
                    for r, place in zip(rows, where)
                ]
                taught = explanation_batch(self.tokenizer, self.prompt, texts, labels.cpu())
                with self._autocast():
                    verdict, words = verdict_and_explanation_loss(
                        self.model, self.prompt, pixels, labels, taught, binary=binary, head_rows=self._head_rows()
                    )
                loss = verdict + options.explain_weight * words
                explain_losses.append(float(words.detach()))
            else:
                with self._autocast():
                    logits = option_logits(self.model, self.prompt, pixels, self._head_rows())
                loss = verdict_loss(logits, labels, binary=binary)
                verdict = loss
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
            self.optimizer.step()
            self.scheduler.step()
            losses.append(float(verdict.detach()))
            if on_step is not None:
                last = self.state.history[-1].val_auroc if self.state.history else None
                on_step(1, float(np.mean(losses[-20:])), last)
        return losses, explain_losses

    def _head_rows(self) -> Any:
        return None if self.option_rows is None else self.option_rows.head_rows()

    def _autocast(self) -> Any:
        return autocast_for(self.options.dtype, str(self.model.device))

    def predict(self, tiles: TileSet, batch: int = 32) -> np.ndarray:
        """Class probabilities (N, classes) for ``tiles``, in eval mode, no augmentation."""
        import torch

        self.model.eval()
        out = []
        with torch.no_grad(), self._autocast():
            for start in range(0, len(tiles), batch):
                logits = option_logits(self.model, self.prompt, tiles.pixels[start : start + batch], self._head_rows())
                out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        self.model.train()
        return np.concatenate(out) if out else np.zeros((0, len(tiles.classes)))

    def validate(self) -> tuple[float, float | None, float | None]:
        """(mean cross-entropy, NG-vs-OK tile AUROC, class accuracy on defect tiles) on the validation tiles."""
        from sklearn.metrics import log_loss, roc_auc_score

        probabilities = self.predict(self.val_tiles)
        labels = self.val_tiles.labels
        loss = float(log_loss(labels, probabilities, labels=list(range(probabilities.shape[1]))))
        ng = labels > 0
        auroc = float(roc_auc_score(ng, 1.0 - probabilities[:, 0])) if 0 < ng.sum() < ng.size else None
        accuracy = float((probabilities[ng, 1:].argmax(1) + 1 == labels[ng]).mean()) if ng.any() else None
        return loss, auroc, accuracy


def describe_counts(tiles: TileSet) -> str:
    return ", ".join(f"{name} {count}" for name, count in tiles.counts().items())


def total_steps(options: TrainOptions) -> int:
    return options.epochs * options.steps_per_epoch


def history_json(history: Sequence[EpochMetrics]) -> list[dict[str, Any]]:
    return [asdict(m) for m in history]

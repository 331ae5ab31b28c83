"""The recipe's parts: trained answer-letter rows, early stopping, the CUDA-only settings' pure parts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets_helpers import station_yaml, write_class_folders
from safetensors.numpy import load_file

from inspector.config import load_config
from inspector.models import load_model
from inspector.training.option_rows import OptionRows
from inspector.training.run import prepare_data, train_model
from inspector.training.trainer import EpochMetrics, Trainer, TrainOptions, autocast_for, device_precision

FAST = TrainOptions(epochs=2, steps_per_epoch=3, batch=4, lr=2e-3, warmup_steps=2, binary_epochs=1)


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    root = tmp_path_factory.mktemp("recipe")
    config_path = station_yaml(root / "station.yaml", tiny_model_dir, tile=64, global_view=False)
    config = load_config(config_path)
    prepared = prepare_data(config, [write_class_folders(root / "folders", per_class=4, seed=3)], val_fraction=0.3)
    return config_path, config, prepared


def _train(station, out: Path, options: TrainOptions = FAST):
    config_path, config, prepared = station
    return train_model(config, str(config_path), str(config.model.path), prepared, out, options)


def test_trained_letter_rows_are_merged_into_an_ordinary_checkpoint(station, tmp_path: Path) -> None:
    """Inference on the written checkpoint gives the numbers training computed with the delta."""
    from inspector.training.objective import option_logits

    trainer, record = _train(station, tmp_path / "rows", replace(FAST, epochs=1, binary_epochs=0))
    assert record is not None and trainer.option_rows is not None
    saved = load_file(str(tmp_path / "rows" / "model.safetensors"))
    assert not any("delta" in k for k in saved)  # nothing but the architecture's own tensors
    base = load_model(str(station[1].model.path)).model
    written = load_model(str(tmp_path / "rows")).model
    rows = list(trainer.prompt.prompt.option_ids)
    moved = written.get_input_embeddings().weight[rows] - base.get_input_embeddings().weight[rows]
    assert moved.abs().max() > 0  # the letters were trained ...
    others = [i for i in range(200) if i not in rows]
    assert torch.equal(written.get_input_embeddings().weight[others], base.get_input_embeddings().weight[others])
    tiles = station[2].val.pixels[:3]
    with torch.no_grad():
        expected = trainer.predict(replace(station[2].val, pixels=tiles, labels=station[2].val.labels[:3]))
        logits = option_logits(written.eval(), trainer.prompt, tiles)
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), expected, atol=1e-5)


def test_option_rows_hooks_add_the_delta_on_both_sides_of_a_tied_table(tiny_loaded) -> None:
    model = tiny_loaded.model
    rows = OptionRows(model, [40, 41])
    with torch.no_grad():
        rows.delta.fill_(0.5)
        ids = torch.tensor([[40, 7, 41]])
        embedded = model.get_input_embeddings()(ids)
        plain = model.get_input_embeddings().weight[ids[0]]
        hidden = torch.ones(1, 1, model.config.text_config.hidden_size)
        logits = model.get_output_embeddings()(hidden)
    rows.merge()
    assert torch.allclose(embedded[0, 0], plain[0] + 0.5) and torch.equal(embedded[0, 1], plain[1])
    assert torch.allclose(logits[0, 0, 40], model.get_output_embeddings()(hidden)[0, 0, 40])
    with torch.no_grad():
        model.get_input_embeddings().weight[[40, 41]] -= 0.5  # undo: the session's model is shared


def _metrics(epoch: int, auroc: float, accuracy: float = 0.5) -> EpochMetrics:
    return EpochMetrics(epoch, 1, 1.0, 1.0, auroc, accuracy, 1e-3, 0.1)


@pytest.mark.parametrize(
    ("aurocs", "stops_after"),
    [
        ((0.5, 0.55, 0.52, 0.51, 0.5), None),  # still on the plateau: never stop there
        ((0.6, 0.95, 0.94, 0.93, 0.99), 4),  # learnt at 2, no better for 2 epochs
        ((0.6, 0.95, 0.96, 0.97, 0.98), None),  # still improving
    ],
)
def test_early_stop_waits_for_learning_then_for_patience(aurocs, stops_after) -> None:
    trainer = Trainer.__new__(Trainer)  # the stopping rule alone: no model needed
    trainer.options = TrainOptions(patience=2)
    from inspector.training.trainer import TrainState

    trainer.state = TrainState()
    stopped = None
    for epoch, auroc in enumerate(aurocs, start=1):
        metrics = _metrics(epoch, auroc)
        trainer.state.history.append(metrics)
        trainer.state.epoch = epoch
        if trainer._is_best(metrics):
            trainer.state.best_epoch = epoch
        if trainer._should_stop():
            stopped = epoch
            break
    assert stopped == stops_after


def test_cuda_trains_in_bf16_with_gradient_checkpointing_cpu_in_float32() -> None:
    assert device_precision("cuda:1") == {"dtype": "bfloat16", "gradient_checkpointing": True}
    assert device_precision("cpu") == {"dtype": "float32", "gradient_checkpointing": False}
    cuda = autocast_for("bfloat16", "cuda")
    assert isinstance(cuda, torch.autocast) and cuda.fast_dtype == torch.bfloat16 and cuda.device == "cuda"
    assert not isinstance(autocast_for("bfloat16", "cpu"), torch.autocast)
    assert not isinstance(autocast_for("float32", "cuda"), torch.autocast)


def test_gradient_checkpointing_trains_the_same_weights(station, tmp_path: Path) -> None:
    """The CUDA path's recomputation, run on CPU: same seed, same weights as without it."""
    one = replace(FAST, epochs=1)
    _train(station, tmp_path / "plain", one)
    _train(station, tmp_path / "checkpointed", replace(one, gradient_checkpointing=True))
    a = load_file(str(tmp_path / "plain" / "model.safetensors"))
    b = load_file(str(tmp_path / "checkpointed" / "model.safetensors"))
    assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize(
    ("aurocs", "restarts"),
    [
        ((0.52, 0.55, 0.6, 0.7, 0.9, 0.95, 0.96, 0.97, 0.97, 0.98), [2]),  # on the plateau after the binary stage
        ((0.6, 0.92, 0.95, 0.96, 0.97, 0.97, 0.98, 0.98), []),  # learnt in time: no restart
        ((0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5), [2]),  # never learns: one restart only
    ],
)
def test_plateau_restart_rewarms_relearns_ok_vs_defect_and_lengthens_the_run(aurocs, restarts) -> None:
    from inspector.training.trainer import TrainState, _schedule

    options = TrainOptions(epochs=8, steps_per_epoch=10, warmup_steps=5, binary_epochs=2, plateau_auroc=0.8)
    trainer = Trainer.__new__(Trainer)  # the rule alone: no model needed
    trainer.options, trainer.state = options, TrainState()
    factor = _schedule(options, trainer.state)
    for epoch, auroc in enumerate(aurocs, start=1):
        if trainer.state.epoch >= trainer.state.planned_epochs(options):
            break
        metrics = _metrics(epoch, auroc)
        trainer.state.history.append(metrics)
        trainer.state.epoch = epoch
        if trainer._is_best(metrics):
            trainer.state.best_epoch = epoch
        trainer._plateau_restart()
    assert trainer.state.restarts == restarts
    assert trainer.state.planned_epochs(options) == 8 + 2 * len(restarts) == trainer.state.epoch
    binary = [e for e in range(1, trainer.state.epoch + 1) if trainer.state.binary_epoch(options, e)]
    assert binary == ([1, 2, 3, 4] if restarts else [1, 2])
    if restarts:  # the learning rate warms up again at the restart, from its decayed value
        assert factor(19) < 1.0 and factor(20) == pytest.approx(1 / 5) and factor(24) == pytest.approx(1.0)
    else:
        assert factor(20) > factor(30) > factor(70)  # one cosine


def test_an_ok_vs_defect_epoch_is_never_kept_over_a_class_epoch_nor_stops_the_run() -> None:
    """OK-vs-defect epochs spread the defect mass over the classes: kept, such a model calls nothing NG."""
    from inspector.training.trainer import TrainState

    trainer = Trainer.__new__(Trainer)
    trainer.options, trainer.state = TrainOptions(binary_epochs=2, patience=2), TrainState()
    kept, stopped = [], None
    for epoch, auroc in enumerate((0.97, 0.99, 0.9, 0.91, 0.92, 0.92, 0.91), start=1):
        metrics = _metrics(epoch, auroc)
        trainer.state.history.append(metrics)
        trainer.state.epoch = epoch
        if trainer._is_best(metrics):
            trainer.state.best_epoch = epoch
        kept.append(trainer.state.best_epoch)
        if stopped is None and trainer._should_stop():
            stopped = epoch
    assert kept == [1, 2, 3, 4, 5, 5, 5]
    assert stopped == 7  # two class epochs without a better score after epoch 5, not 2 after epoch 2


def test_the_explanation_words_rows_train_and_are_merged_with_the_letters(station, tmp_path: Path) -> None:
    """Frozen random rows hold the words' logits near uniform over the whole table: their rows train too."""
    from inspector.explanation_text import explanation_parts
    from inspector.training.objective import taught_word_ids

    options = replace(FAST, epochs=1, binary_epochs=0, explain=True, word_rows=True)
    trainer, record = _train(station, tmp_path / "words", options)
    assert record is not None and trainer.option_rows is not None
    letters = list(trainer.prompt.prompt.option_ids)
    assert trainer.option_rows.head_rows().shape[0] == len(letters)  # the verdict still reads the letters only
    config = station[1]
    taught = taught_word_ids(
        trainer.tokenizer, trainer.prompt, [explanation_parts(config.inspection, 1, (0.5, 0.5), 1.0)]
    )
    base = load_model(str(config.model.path)).model.get_input_embeddings().weight
    written = load_model(str(tmp_path / "words")).model.get_input_embeddings().weight
    moved = [i for i in taught if not torch.equal(written[i], base[i])]
    assert moved and set(moved) <= set(trainer.option_rows.rows)  # the taught words' rows moved, into the table
    untouched = [i for i in range(300) if i not in trainer.option_rows.rows]
    assert torch.equal(written[untouched], base[untouched])


def test_training_runs_torchs_deterministic_kernels_and_restores_the_setting(station, tmp_path: Path) -> None:
    """With 2 CPU threads two runs of one seed differed in the last bits of the demo's weights until
    training used torch's deterministic kernels; the caller's own setting comes back afterwards."""
    config_path, config, prepared = station
    seen: list[tuple[bool, bool]] = []

    def on_epoch(_trainer) -> None:
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        seen.append((torch.are_deterministic_algorithms_enabled(), warn_only))

    assert not torch.are_deterministic_algorithms_enabled()
    train_model(config, str(config_path), str(config.model.path), prepared, tmp_path / "out", replace(FAST, epochs=1),
                on_epoch=on_epoch)  # fmt: skip
    assert seen == [(True, True)]
    assert not torch.are_deterministic_algorithms_enabled()

"""`inspector train`: the loss is inference's own numbers; full and LoRA train; resume, determinism, records."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from datasets_helpers import station_yaml, write_class_folders, write_coco
from safetensors.numpy import load_file

from inspector import cli
from inspector.artifacts.identity import identify_checkpoint
from inspector.config import load_config
from inspector.datasets import load_dataset
from inspector.models import DEMO_MARKER, RANDOM_MARKER, load_model
from inspector.training.run import CHECKPOINT, TRAINING_FILE, prepare_data, train_model
from inspector.training.trainer import TrainingError, TrainOptions

FAST = TrainOptions(epochs=2, steps_per_epoch=4, batch=4, lr=2e-3, warmup_steps=2, binary_epochs=1)


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path]:
    """(config path, class-folder data): 64-px tiles, ok panels and panels with a drawn defect."""
    root = tmp_path_factory.mktemp("train")
    config = station_yaml(root / "station.yaml", tiny_model_dir, tile=64, global_view=False)
    data = write_class_folders(root / "folders", per_class=6, seed=1)
    return config, data


@pytest.fixture(scope="module")
def prepared(station: tuple[Path, Path]):
    config_path, data = station
    return prepare_data(load_config(config_path), [data], val_fraction=0.3, seed=0)


def _train(station, prepared, out: Path, options: TrainOptions = FAST, **kwargs):
    config_path, _ = station
    config = load_config(config_path)
    return train_model(config, str(config_path), str(config.model.path), prepared, out, options, **kwargs)


def _weights(directory: Path) -> dict[str, np.ndarray]:
    return load_file(str(directory / "model.safetensors"))


def test_the_training_forward_gives_the_numbers_inference_softmaxes(station, prepared) -> None:
    from inspector.backends.torch import TorchBackend
    from inspector.training.objective import TrainingPrompt, option_logits
    from inspector.vision import patchify

    config = load_config(station[0])
    loaded = load_model(str(config.model.path))
    tiles = prepared.val.pixels[:3]
    prompt = TrainingPrompt.build(loaded.tokenizer, config.inspection, config.tiling.tile)
    with torch.no_grad():
        trained_view = option_logits(loaded.model, prompt, tiles).numpy()
    backend = TorchBackend(loaded)
    pixels, grid = patchify(tiles, min_pixels=0)
    visual = backend.encode(pixels, grid)
    ids = np.broadcast_to(prompt.prompt.input_ids, (len(tiles), prompt.prompt.length))
    inference_view, _ = backend.prefill(ids, visual, prompt.prompt.option_ids)
    np.testing.assert_allclose(trained_view, inference_view, atol=1e-5)


def _black_squares(root: Path, count: int = 16, seed: int = 0) -> Path:
    """A trivially learnable set: plain noisy panels (ok/) and panels with a big black square (spot/)."""
    rng = np.random.default_rng(seed)
    for cls in ("ok", "spot"):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(100, 160, (64, 64, 3), dtype=np.uint8)
            if cls == "spot":
                x, y = rng.integers(0, 24, 2)
                image[y : y + 40, x : x + 40] = 10
            cv2.imwrite(str(root / cls / f"{i}.png"), image)
    return root


def test_full_training_reduces_the_loss_on_a_learnable_set(station, tmp_path: Path) -> None:
    """Class folders (drawn here, not by the demo generator) through the command line: below the
    prior's loss (ln 2 for two balanced classes) only if the answer depends on the image."""
    config_path, _ = station
    data = _black_squares(tmp_path / "squares")
    out = tmp_path / "full"
    argv = ["train", "-c", str(config_path), "--data", str(data), "--out", str(out), "--epochs", "2",
            "--steps", "50", "--batch", "8", "--lr", "3e-3", "--binary-epochs", "0", "--val-fraction", "0.25",
            "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    record = json.loads((out / TRAINING_FILE).read_text())
    losses = [e["train_loss"] for e in record["epochs"]]
    assert losses[-1] < losses[0] - 0.1, losses
    assert record["epochs"][-1]["val_loss"] < 0.6 < 0.69 < record["epochs"][0]["train_loss"], record["epochs"]
    assert record["best"]["val_auroc"] >= 0.9, record["epochs"]


def test_resume_after_a_kill_continues_identically(station, prepared, tmp_path: Path) -> None:
    straight, _ = _train(station, prepared, tmp_path / "straight")
    _, record = _train(station, prepared, tmp_path / "killed", stop_after_epoch=1)  # the process dies here
    assert record is None and (tmp_path / "killed" / CHECKPOINT).is_file()
    assert not (tmp_path / "killed" / TRAINING_FILE).exists()  # nothing looks like a finished model
    with pytest.raises(TrainingError, match="--resume"):
        _train(station, prepared, tmp_path / "killed")
    with pytest.raises(TrainingError, match="lr"):
        _train(station, prepared, tmp_path / "killed", replace(FAST, lr=1e-2), resume=True)
    resumed, _ = _train(station, prepared, tmp_path / "killed", resume=True)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in vars(m).items() if k != "seconds"} for m in straight.state.history]
    assert strip == [{k: v for k, v in vars(m).items() if k != "seconds"} for m in resumed.state.history]


class _CodeOnLoad:
    """Unpickling this runs ``open(path, "w")``: what a tampered state file could do on --resume."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_resume_refuses_a_state_file_that_carries_code(station, prepared, tmp_path: Path) -> None:
    out = tmp_path / "tampered"
    _, record = _train(station, prepared, out, stop_after_epoch=1)
    assert record is None
    state = torch.load(out / CHECKPOINT, weights_only=True)  # the real state loads as plain data
    marker = tmp_path / "pwned"
    torch.save({**state, "history": _CodeOnLoad(marker)}, out / CHECKPOINT)
    with pytest.raises(TrainingError, match="refused"):
        _train(station, prepared, out, resume=True)
    assert not marker.exists()


def test_a_seed_determines_the_model(station, prepared, tmp_path: Path) -> None:
    one = replace(FAST, epochs=1)
    _train(station, prepared, tmp_path / "a", one)
    _train(station, prepared, tmp_path / "b", one)
    _train(station, prepared, tmp_path / "c", replace(one, seed=1))
    a, b, c = (_weights(tmp_path / n) for n in "abc")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_training_json_records_base_data_config_and_epochs(station, prepared, tmp_path: Path, tiny_model_dir) -> None:
    _train(station, prepared, tmp_path / "out")
    out = tmp_path / "out"
    record = json.loads((out / TRAINING_FILE).read_text())
    base = identify_checkpoint(tiny_model_dir)
    assert record["base_model"]["weights_sha256"] == base.weights_sha256 and base.weights_sha256
    assert record["base_model"]["random_weights"] is True and record["demo_model"] is True
    dataset = load_dataset(station[1], load_config(station[0]))
    assert [d["fingerprint"] for d in record["data"]] == [dataset.fingerprint()]
    assert record["seed"] == FAST.seed and record["options"]["lr"] == FAST.lr
    assert record["config"]["station"]["tiling"]["tile"] == 64
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert record["best_epoch"] in (1, 2) and record["best"]["epoch"] == record["best_epoch"]
    assert all(0 <= e["val_auroc"] <= 1 for e in record["epochs"])
    assert sum(record["tiles"]["train"].values()) + sum(record["tiles"]["validation"].values()) == 24
    # An ordinary checkpoint, labelled a DEMO model and no longer random.
    assert (out / DEMO_MARKER).is_file() and not (out / RANDOM_MARKER).exists()
    loaded = load_model(str(out))
    assert loaded.demo_model and not loaded.random_weights


def test_demo_label_flows_into_verdicts(station, prepared, tmp_path: Path) -> None:
    from inspector.frames import Frame
    from inspector.pipeline import build_inspector, model_config_with

    _train(station, prepared, tmp_path / "out", replace(FAST, epochs=1))
    config = model_config_with(load_config(station[0]), path=str(tmp_path / "out"))
    inspector = build_inspector(config)
    image = np.full((64, 96, 3), 128, np.uint8)
    verdict = inspector.inspect(Frame(image=image, source_id="t", index=0, captured_at=datetime.now(UTC)))
    payload = json.loads(verdict.model_dump_json(by_alias=True))
    assert payload["model"]["demo_model"] is True and payload["model"]["random_weights"] is False
    assert tuple(map(int, payload["schema_version"].split("."))) >= (1, 1)  # demo_model arrived in 1.1


def test_refuses_to_overwrite_a_checkpoint_it_did_not_write(station, prepared, tiny_model_dir) -> None:
    with pytest.raises(TrainingError, match="did not write"):
        _train(station, prepared, tiny_model_dir)


def test_lora_trains_merges_exactly_and_exports(station, prepared, tmp_path: Path, tiny_model_dir) -> None:
    from peft import PeftModel

    from export.onnx_export import export_checkpoint
    from export.parity import check_parity
    from inspector.training.objective import TrainingPrompt, option_logits

    options = replace(FAST, method="lora", epochs=1, lora_rank=4, lora_alpha=8, lr=5e-3)
    trainer, record = _train(station, prepared, tmp_path / "lora", options)
    out = tmp_path / "lora"
    assert record is not None and (out / "adapter" / "adapter_config.json").is_file()
    # The unmerged model (base + adapter) and the merged checkpoint agree.
    config = load_config(station[0])
    base = load_model(str(tiny_model_dir))
    unmerged = PeftModel.from_pretrained(base.model, str(out / "adapter")).eval()
    lora_b = [p for n, p in unmerged.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)  # it trained: B starts at zero
    merged = load_model(str(out)).model
    prompt = TrainingPrompt.build(base.tokenizer, config.inspection, config.tiling.tile)
    tiles = prepared.val.pixels[:4]
    with torch.no_grad():
        a, b = option_logits(unmerged, prompt, tiles), option_logits(merged, prompt, tiles)
        fresh = option_logits(load_model(str(tiny_model_dir)).model, prompt, tiles)
    assert float((a - b).abs().max()) <= 1e-5
    assert float((a - fresh).abs().max()) > 1e-4  # and it is not the base model
    export_checkpoint(out, 64, tmp_path / "onnx")
    report = check_parity(out, tmp_path / "onnx", batch=2, tokens=4)
    assert report.passed, report


def test_coco_data_trains(tmp_path: Path, tiny_model_dir: Path) -> None:
    config_path = station_yaml(tmp_path / "station.yaml", tiny_model_dir, tile=64, global_view=False)
    coco = write_coco(tmp_path / "coco", images=8, seed=2)
    config = load_config(config_path)
    names = {"Scratch": "scratch", "Spot": "spot", "Crack": "crack"}
    data = prepare_data(config, [coco], val_fraction=0.25, seed=0, class_map=names)
    trainer, record = train_model(config, str(config_path), str(tiny_model_dir), data, tmp_path / "out",
                                  replace(FAST, epochs=1, steps_per_epoch=2))  # fmt: skip
    assert record is not None and record["data"][0]["path"].endswith(".json")


def test_explanation_loss_trains_the_words_after_the_answer(station, prepared, tmp_path: Path) -> None:
    from inspector.explanation_text import explanation_text, names_class_and_region

    inspection = load_config(station[0]).inspection
    assert explanation_text(inspection, 0, None) == inspection.ok_description
    assert explanation_text(inspection, 2, (0.1, 0.9), 0.2) == "spot: a dark blob, bottom left, small"
    assert explanation_text(inspection, 1, (0.5, 0.5), 0.9) == "scratch: a thin bright line, centre, large"
    assert names_class_and_region("spot: a dark blob, bottom left, small", "spot", (0.2, 0.8))
    assert not names_class_and_region("spot: a dark blob, bottom left, small", "scratch", (0.2, 0.8))
    assert not names_class_and_region("spot: a dark blob, bottom left, small", "spot", (0.5, 0.5))
    trainer, record = _train(station, prepared, tmp_path / "explain", replace(FAST, epochs=1, explain=True))
    words = record["epochs"][0]["explanation_loss"]
    assert words is not None and 0 < words < math.log(9)  # over the ids a decode picks among: at most 9 regions

    # Taught: only the place, at the positions where the constrained decode has a choice, over those choices.
    from inspector.explanation_text import explanation_parts
    from inspector.training.objective import explanation_batch

    texts = [explanation_parts(inspection, 2, (0.1, 0.9), 0.2), explanation_parts(inspection, 0, None)]
    batch = explanation_batch(trainer.tokenizer, trainer.prompt, texts, torch.tensor([2, 0]))
    tail = trainer.tokenizer.encode(texts[0][1], add_special_tokens=False)
    places = trainer.prompt.prompt.explanation_tails[2]
    choosing = [k for k in range(len(tail)) if len(places.allowed(tail[:k])) > 1]
    assert batch.ids[0][batch.mask[0]].tolist() == [tail[k] for k in choosing] and choosing
    assert not batch.mask[1].any()  # OK tiles: no words are generated, none taught
    for k, row in zip(choosing, batch.choices[0][batch.mask[0]].tolist()):
        assert [t for t in row if t >= 0] == list(places.allowed(tail[:k]))

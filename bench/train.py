"""Training throughput and time-to-quality for the offline demo: prints one JSON line.

    python bench/train.py [--train-clips 16] [--max-steps 1500] [--check-every 100] [--threads 2]

Builds the demo model (`inspector model tiny --preset demo`) and the demo data
(`inspector demo-data`: training clips + the held-out clip on an unseen surface) in a temp dir,
with the demo station config (configs/demo.yaml). Figures:

- train_tiles_per_s_cpu: training tiles per second (forward + backward + AdamW step, batch of
  the recipe), best of 3 timed runs of 5 steps; infer_tiles_per_s_cpu: the reference, the torch
  backend's encode + prefill (inference) of the same tiles in the same process; and their ratio
  train_over_infer_cpu. The same on CUDA (``*_cuda``) where a GPU is visible.
- steps_to_auroc_95 / seconds_to_auroc_95: the recipe's training, validated on the held-out
  clip's tiles every --check-every steps, until tile AUROC (NG vs OK) >= 0.95 (null: not within
  --max-steps); best_auroc and its step; cpu_seconds_per_step (process CPU time: on a shared
  machine, the time the steps would take alone).
"""

from __future__ import annotations

import _common  # noqa: I001  (first: thread-pool sizes are read when numpy and torch load)

_common.use_checkout()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from inspector.config import load_config  # noqa: E402
from inspector.demo_data import write_demo_set  # noqa: E402
from inspector.models import load_model, write_tiny_model  # noqa: E402
from inspector.training.run import expand_data_paths, prepare_data, prepare_model  # noqa: E402
from inspector.training.trainer import Trainer, TrainOptions  # noqa: E402
from inspector.vision import patchify  # noqa: E402

CONFIG = _common.CHECKOUT / "configs" / "demo.yaml"


def recipe() -> TrainOptions:
    """The README's recipe (the defaults of `inspector train`, which the demo uses as is)."""
    from inspector.commands.train_cmd import DEFAULTS

    return TrainOptions(**DEFAULTS)


def throughput(model, tokenizer, config, tiles, options: TrainOptions, device: str) -> dict[str, float]:
    from inspector.backends.torch import TorchBackend
    from inspector.models import LoadedModel
    from inspector.training.data import TileSet

    model = model.to(device)
    pixels = tiles.pixels[: options.batch]
    labels = tiles.labels[: options.batch]
    batch = TileSet(pixels, labels, tiles.where[: options.batch], tiles.classes)
    trainer = Trainer(model, tokenizer, config, batch, batch, replace(options, device=device, steps_per_epoch=5))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def train_steps() -> None:
        trainer._train_epoch(1, None)
        sync()

    train_s = _common.best_of(train_steps, 3)
    backend = TorchBackend(LoadedModel(model.eval(), tokenizer, "bench", False, "float32", device))
    prompt = trainer.prompt.prompt
    ids = np.broadcast_to(prompt.input_ids, (len(pixels), prompt.length))

    def infer() -> None:
        values, grid = patchify(pixels, min_pixels=0)
        backend.prefill(ids, backend.encode(values, grid), prompt.option_ids)
        sync()

    infer_s = _common.best_of(infer, 3)
    train_rate = 5 * len(pixels) / train_s
    infer_rate = len(pixels) / infer_s
    suffix = "cuda" if device.startswith("cuda") else "cpu"
    return {
        f"train_tiles_per_s_{suffix}": round(train_rate, 2),
        f"infer_tiles_per_s_{suffix}": round(infer_rate, 2),
        f"train_over_infer_{suffix}": round(train_rate / infer_rate, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-clips", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument("--check-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    from inspector.commands.model_cmd import PRESETS

    config = load_config(CONFIG)
    options = recipe()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tiny_model(root / "tiny", spec=PRESETS["demo"])
        demo = write_demo_set(root / "demo", train_clips=args.train_clips)
        assert demo.heldout is not None
        prepared = prepare_data(config, expand_data_paths([root / "demo" / "train"]),
                                val_data=[demo.heldout.labels_path.parent], seed=options.seed)  # fmt: skip
        loaded = load_model(str(root / "tiny"))
        figures: dict[str, object] = {"bench": "train", "tile": config.tiling.tile, "batch": options.batch}
        figures.update(throughput(prepare_model(loaded.model, options), loaded.tokenizer, config,
                                  prepared.train, options, "cpu"))  # fmt: skip
        if torch.cuda.is_available():
            fresh = load_model(str(root / "tiny"))
            figures.update(throughput(prepare_model(fresh.model, options), fresh.tokenizer, config,
                                      prepared.train, options, "cuda"))  # fmt: skip

        # Time to quality: the recipe's schedule, validated on the held-out clip every check_every steps.
        loaded = load_model(str(root / "tiny"))
        epochs = max(1, args.max_steps // args.check_every)
        run = replace(options, epochs=epochs, steps_per_epoch=args.check_every)
        trainer = Trainer(prepare_model(loaded.model, run), loaded.tokenizer, config, prepared.train,
                          prepared.val, run)  # fmt: skip
        began, cpu_began = time.perf_counter(), time.process_time()
        reached = None
        for epoch in range(1, epochs + 1):
            trainer.run(stop_after_epoch=epoch)
            auroc = trainer.state.history[-1].val_auroc or 0.0
            if auroc >= 0.95 and reached is None:
                reached = (epoch * args.check_every, time.perf_counter() - began)
                break
        steps = trainer.state.epoch * args.check_every
        best = max(trainer.state.history, key=lambda m: m.val_auroc or 0.0)
        figures.update(
            steps_to_auroc_95=reached[0] if reached else None,
            seconds_to_auroc_95=round(reached[1], 1) if reached else None,
            best_auroc=best.val_auroc,
            best_auroc_step=best.epoch * args.check_every,
            cpu_seconds_per_step=round((time.process_time() - cpu_began) / steps / args.threads, 3),
            auroc_curve=[m.val_auroc for m in trainer.state.history],
            heldout_defect_tiles=int((prepared.val.labels > 0).sum()),
            heldout_ok_tiles=int((prepared.val.labels == 0).sum()),
            threads=args.threads,
        )
    _common.emit(figures) if hasattr(_common, "emit") else print(__import__("json").dumps(figures))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

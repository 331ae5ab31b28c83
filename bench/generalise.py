"""Does the DEFAULT `inspector train` recipe learn data this project did not make? Prints one JSON line.

    python bench/generalise.py [--sets metal-coco,fabric-clip,wood-folders,concrete-coco,lfw-real] [--seed 0]

Each set is built by ``tests/foreign_sets.py`` (procedural textures and defect shapes that share
no code with ``inspector/demo_data.py``) or, for ``lfw-real``, from real photographs bundled in
scikit-image (faces vs non-face patches). A training part and a held-out part come from different
seeds (lfw-real: a seeded split of its 200 images). Each set gets a fresh tiny random model
(`inspector model tiny --preset demo`) and `inspector train` with default flags (only --config,
--data, --out); the trained model then judges every held-out image through the inference pipeline
(``Inspector.predict``). Per set: frame AUROC (an image's score = its most NG tile's defect
probability), class accuracy on defective images (the most confident tile's class among the
image's labelled classes), the best epoch and its validation AUROC, train CPU and wall seconds.
The reference figure is each set's class prior (AUROC 0.5, class accuracy 1/classes).
"""

from __future__ import annotations

import _common  # noqa: I001  (first: thread-pool sizes are read when numpy and torch load)

_common.use_checkout()

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(_common.CHECKOUT / "tests"))
import foreign_sets as fs  # noqa: E402

# name -> (build(root, tile) -> (config, train data, held-out data), tile)
Builder = Callable[[Path, Path, int], tuple[Path, Path, Path]]


def _frames_set(texture: str, writer: str, *, classes: tuple[str, ...] = fs.FOREIGN_CLASSES, train: int = 120,
                held: int = 40, tint: bool = False, size: tuple[int, int] = (384, 256)) -> Builder:  # fmt: skip
    def build(root: Path, model: Path, tile: int) -> tuple[Path, Path, Path]:
        config = fs.station_yaml(root / "station.yaml", model, tile=tile, classes=classes)
        parts = {}
        for part, count, seed in (("train", train, 1), ("heldout", held, 2)):
            frames = fs.make_frames(count, texture=texture, seed=seed, classes=classes, tint=tint, size=size)
            if writer == "coco":
                parts[part] = fs.write_coco(root / part, frames, classes)
            elif writer == "clip":
                parts[part] = fs.write_clip(root / part, frames, classes) / "labels.json"
            else:
                parts[part] = fs.write_class_folders(root / part, frames, tile)
        return config, parts["train"], parts["heldout"]

    return build


def _lfw(root: Path, model: Path, tile: int) -> tuple[Path, Path, Path]:
    config = fs.station_yaml(root / "station.yaml", model, tile=tile, classes=("face",), product="a photograph")
    everything = fs.write_lfw_folders(root / "all", tile)
    rng = np.random.default_rng(0)
    for cls_dir in sorted(everything.iterdir()):
        files = sorted(cls_dir.iterdir())
        held = set(rng.choice(len(files), size=len(files) // 5, replace=False).tolist())
        for i, file in enumerate(files):
            target = root / ("heldout" if i in held else "train") / cls_dir.name
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target / file.name)
    return config, root / "train", root / "heldout"


SETS: dict[str, tuple[Builder, int]] = {
    "lfw-real": (_lfw, 64),
    "metal-coco": (_frames_set("metal", "coco"), 64),
    "wood-folders": (_frames_set("wood", "folders", train=150, held=60, tint=True), 64),
    "fabric-clip": (_frames_set("fabric", "clip"), 64),
    "concrete-coco": (_frames_set("concrete", "coco", classes=("pit", "stain"), train=80), 96),
}


def run_set(name: str, work: Path, seed: int) -> dict[str, object]:
    from inspector import cli
    from inspector.commands.model_cmd import PRESETS
    from inspector.models import write_tiny_model

    build, tile = SETS[name]
    root = work / name
    model = write_tiny_model(root / "tiny", spec=PRESETS["demo"], seed=seed)
    config, train, heldout = build(root, model, tile)
    out = root / "trained"
    cpu, wall = time.process_time(), time.perf_counter()
    argv = ["train", "--config", str(config), "--data", str(train), "--out", str(out), "--seed", str(seed),
            "--no-progress"]  # fmt: skip
    if cli.main(argv) != 0:
        raise SystemExit(f"{name}: inspector train failed")
    figures: dict[str, object] = {
        "train_cpu_s": round(time.process_time() - cpu, 1),
        "train_wall_s": round(time.perf_counter() - wall, 1),
    }
    record = json.loads((out / "training.json").read_text())
    best = record["best"] or {}
    figures.update(best_epoch=record["best_epoch"], epochs_run=len(record["epochs"]),
                   val_auroc=best.get("val_auroc"), tiles=record["tiles"]["train"])  # fmt: skip
    figures.update(fs.judge_frames(config, out, heldout))
    figures["class_accuracy_prior"] = round(1 / figures["classes"], 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated, from: " + ", ".join(SETS))
    parser.add_argument("--seed", type=int, default=0, help="model and training seed (data seeds are fixed)")
    parser.add_argument("--work", type=Path, help="keep the sets and models here (default: a temp dir)")
    args = parser.parse_args()
    names = [n for n in args.sets.split(",") if n]
    unknown = sorted(set(names) - set(SETS))
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(SETS)}")
    with tempfile.TemporaryDirectory(prefix="generalise-") as temp:
        work = (args.work or Path(temp)).resolve()  # absolute: a config reads relative paths from its own folder
        results = {}
        for name in names:
            results[name] = run_set(name, work, args.seed)
            print(json.dumps({"set_done": name, **results[name]}), file=sys.stderr, flush=True)
    aurocs = [r["frame_auroc"] for r in results.values()]
    _common.emit({"recipe": "inspector train defaults", "seed": args.seed, "worst_frame_auroc": min(aurocs),
                  "median_frame_auroc": float(np.median(aurocs)), "sets": results})  # fmt: skip


if __name__ == "__main__":
    main()

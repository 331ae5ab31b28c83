"""The README main job (train, then judge the held-out clip) for several seeds: one JSON line of median/worst/best.

    python bench/demo_seeds.py [--seeds 5] [--jobs 1] [--work DIR] [--threads 1]

Once: `inspector demo-data` (its own fixed seed, as the main job) into WORK/demo. Per seed S,
as the main job does, in a subprocess each: `inspector model tiny --preset demo --seed S`,
`inspector train --config configs/demo.yaml --data demo/train --out ... --seed S` (default
flags), then `inspector evaluate` of the trained model on the held-out clip (demo/heldout: a
surface and seed no training clip has) with explanations on for NG tiles, verdicts saved.

Figures per seed, then their median, worst and best over the seeds (worst = lowest, or highest
for seconds): tile AUROC, frame AUROC, frame precision and recall at the config's thresholds,
frame recall at precision >= 0.9 (the best threshold on the frame scores: what calibration could
reach), class accuracy, box hit rate, explanation hit rate (NG frames whose explanation names the
predicted class and the region of a labelled defect in the explaining tile:
``inspector.explanation_text.explanation_hit``), train wall and CPU seconds (CPU: the
train process's user + system time, what it would take alone on an idle machine with one thread).
"""

from __future__ import annotations

import _common  # noqa: I001  (first: thread-pool sizes are read when numpy and torch load)

_common.use_checkout()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from inspector.models.tokenizer import VOCABULARIES, resolve_vocabulary  # noqa: E402

CONFIG = _common.CHECKOUT / "configs" / "demo.yaml"
HIGHER_IS_BETTER = ("tile_auroc", "frame_auroc", "frame_precision", "frame_recall", "recall_at_precision_90",
                    "class_accuracy", "box_hit_rate", "explanation_hit_rate")  # fmt: skip
LOWER_IS_BETTER = ("train_wall_s", "train_cpu_s", "epochs_run")


def _inspector(args: list[str], log: Path, threads: int) -> tuple[float, float]:
    """Run `inspector ARGS` to completion; (wall s, CPU s of the child)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": str(_common.CHECKOUT), "HF_HUB_OFFLINE": "1"}  # fmt: skip
    command = [sys.executable, "-m", "inspector", *args]
    began = time.perf_counter()
    with log.open("a") as out:
        out.write("$ inspector " + " ".join(args) + "\n")
        out.flush()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"inspector {args[0]} failed; see {log}")
    return time.perf_counter() - began, usage.ru_utime + usage.ru_stime


def recall_at_precision(truth: np.ndarray, scores: np.ndarray, floor: float = 0.9) -> float | None:
    from sklearn.metrics import precision_recall_curve

    if truth.all() or not truth.any():
        return None
    precision, recall, _ = precision_recall_curve(truth, scores)
    reachable = recall[precision >= floor]
    return float(reachable.max()) if reachable.size else 0.0


def score(config: Path, data: Path, verdicts: Path) -> dict[str, float | int | None]:
    from inspector.config import load_config
    from inspector.datasets import load_dataset
    from inspector.evaluation.metrics import evaluate
    from inspector.evaluation.predictions import match_verdicts, read_verdicts

    station = load_config(config)
    dataset = load_dataset(data, station)
    pairs = match_verdicts(dataset, read_verdicts(verdicts))
    evaluation = evaluate(pairs, dataset.classes)
    figures = {k: v for k, v in evaluation.summary().items() if k in HIGHER_IS_BETTER}
    truth, frame_scores = evaluation.curves["frame"]
    figures["recall_at_precision_90"] = recall_at_precision(np.asarray(truth), np.asarray(frame_scores))
    return figures


def explaining_config(work: Path) -> Path:
    """configs/demo.yaml with explanations for NG tiles (what the issue measures), whatever it ships with."""
    config = yaml.safe_load(CONFIG.read_text())
    config["inspection"]["explanation"] = "defects"
    config["sinks"] = {}
    path = work / "demo-explain.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_seed(seed: int, work: Path, demo: Path, threads: int, config: Path, vocabulary: str) -> dict[str, object]:
    root = work / f"seed-{seed}"
    root.mkdir(parents=True, exist_ok=True)
    log = root / "log.txt"
    tiny, model, verdicts = root / "tiny", root / "model", root / "verdicts.jsonl"
    _inspector(["model", "tiny", str(tiny), "--preset", "demo", "--seed", str(seed), "--vocabulary", vocabulary],
               log, threads)  # fmt: skip
    wall, cpu = _inspector(["train", "--config", str(CONFIG), "--model", str(tiny), "--data", str(demo / "train"),
                            "--out", str(model), "--seed", str(seed), "--no-progress"], log, threads)  # fmt: skip
    _inspector(["evaluate", "--config", str(config), "--model", str(model), "--data", str(demo / "heldout"),
                "--save-verdicts", str(verdicts), "--no-progress"], log, threads)  # fmt: skip
    record = json.loads((model / "training.json").read_text())
    figures: dict[str, object] = {"seed": seed, "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1),
                                  "epochs_run": len(record["epochs"]), "best_epoch": record["best_epoch"]}  # fmt: skip
    figures.update(score(config, demo / "heldout", verdicts))
    print(json.dumps({"seed_done": figures}), file=sys.stderr, flush=True)
    return figures


def spread(per_seed: list[dict[str, object]]) -> dict[str, dict[str, float | None]]:
    out = {}
    for key in HIGHER_IS_BETTER + LOWER_IS_BETTER:
        values = [float(s[key]) for s in per_seed if s.get(key) is not None]
        if not values:
            out[key] = {"median": None, "worst": None, "best": None}
            continue
        low, high = min(values), max(values)
        worst, best = (low, high) if key in HIGHER_IS_BETTER else (high, low)
        out[key] = {"median": float(np.median(values)), "worst": worst, "best": best}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    parser.add_argument("--work", type=Path, help="keep data, models and logs here (default: a temp dir)")
    parser.add_argument("--vocabulary", choices=VOCABULARIES, default="auto",
                        help="the tiny models' tokenizer, as `inspector model tiny --vocabulary`; auto, as the main "
                             "job: Qwen's where dashscope is installed (.ci/run), else the offline one (the README's "
                             "install line)")  # fmt: skip
    args = parser.parse_args()
    vocabulary = resolve_vocabulary(args.vocabulary)
    with tempfile.TemporaryDirectory(prefix="demo-seeds-") as temp:
        work = (args.work or Path(temp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        demo = work / "demo"
        if not (demo / "heldout" / "labels.json").exists():
            _inspector(["demo-data", str(demo)], work / "demo-data.log", args.threads)
        config = explaining_config(work)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            per_seed = list(pool.map(lambda s: run_seed(s, work, demo, args.threads, config, vocabulary),
                                     range(args.seeds)))  # fmt: skip
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    _common.emit({"seeds": args.seeds, "jobs": args.jobs, "threads": args.threads, "vocabulary": vocabulary,
                  "targets_worst_seed": {"tile_auroc": 0.95, "frame_recall": 0.9, "frame_precision": 0.9,
                                         "class_accuracy": 0.7, "explanation_hit_rate": 0.8, "train_wall_s": 300},
                  "figures": spread(per_seed), "per_seed": per_seed,
                  "all_children_cpu_s": round(children.ru_utime + children.ru_stime, 1)})  # fmt: skip


if __name__ == "__main__":
    main()

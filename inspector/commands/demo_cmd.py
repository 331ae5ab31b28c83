"""`inspector demo`: the main job in one command: model, data, training, calibration, held-out replay, evaluation."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.commands.demo_data import _positive_int, _size
from inspector.errors import InspectorError

log = logging.getLogger(__name__)

DESCRIPTION = """\
The main job, offline, in one command. Each step is an ordinary `inspector` command, run for you:

  1. model      `inspector model tiny --preset demo`: a tiny RANDOM Qwen3-VL of the real
                architecture (DIR/models/tiny)
  2. station    the demo station (configs/demo.yaml) pointed at DIR (DIR/station.yaml)
  3. data       `inspector demo-data`: training clips, a calibration clip and a held-out clip
                on a surface no training clip shows (DIR/data)
  4. train      `inspector train --explain`: the verdict and a short explanation, learnt from
                the labels; a DEMO model (DIR/models/demo)
  5. calibrate  `inspector calibrate` on the calibration clip only: per-class thresholds and
                the uncertain band (DIR/station.calibrated.yaml); the held-out clip is never
                used to choose them
  6. replay     `inspector replay` of the held-out clip with its labels, under the calibrated
                thresholds (DIR/heldout-verdicts.jsonl); prints what the model said about NG frames
  7. evaluate   `inspector evaluate` of those verdicts: the table below and the HTML report
                (DIR/report.html; the headline figures in DIR/evaluation.json)

It ends with the evaluation table: escape and overkill rates, frame precision and recall, tile
and frame AUROC, class accuracy and box hit rate, all on the held-out clip (docs/demo.md says
how to read them). The model is a DEMO model: its figures and words say nothing about real parts.

Resumable: DIR/demo.json records the finished steps; running the command again skips them
(an interrupted training or replay continues where it stopped) and prints the table again.
--force redoes every step. A step that runs makes every later step run again.
"""

EXAMPLES = """\
examples:
  inspector demo                              # everything under ./demo-run (minutes on 2 CPU cores)
  inspector demo --dir runs/seed3 --seed 3    # another seed: other data, weights and training order
  inspector demo --force                      # redo every step
then:
  inspector replay demo-run/data/clip.mp4 --config demo-run/station.calibrated.yaml
  inspector-edge --config demo-run/station.calibrated.yaml --source demo-run/data/clip.mp4 --loop
"""

STATE_FILE = "demo.json"
STATE_VERSION = 1
# The escape bound the demo calibrates for, at the lowest overkill; UNCERTAIN as calibrate's default.
MAX_ESCAPE = 0.05
MAX_UNCERTAIN = 0.1


@dataclass(frozen=True)
class Settings:
    """Everything a finished step depends on; a folder made with other settings is not resumed."""

    seed: int
    preset: str = "demo"
    size: tuple[int, int] | None = None  # None: demo-data's defaults
    train_clips: int | None = None
    frames: int | None = None  # per training, calibration and held-out clip
    steps: int | None = None
    epochs: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    outputs: tuple[Path, ...]  # removed before the step runs again (--force, or an earlier step ran)
    run: Callable[[], None]
    finished: Callable[[], bool]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the main job in one command: train the demo model, calibrate, replay the held-out clip, report",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dir", type=Path, default=Path("demo-run"), help="working folder (default demo-run)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the data, the base model's weights and training (default 0)"
    )
    parser.add_argument("--force", action="store_true", help="redo every step, even those finished before")
    parser.add_argument(
        "--config", type=Path, help="the station to start from (default: configs/demo.yaml of this checkout)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (step lines and logs only)")
    # Small runs for the tests; the real demo keeps every command's defaults.
    hidden = argparse.SUPPRESS
    parser.add_argument("--preset", choices=("test", "demo"), default="demo", help=hidden)
    parser.add_argument("--size", type=_size, help=hidden)
    parser.add_argument("--train-clips", type=_positive_int, help=hidden)
    parser.add_argument("--frames", type=_positive_int, help=hidden)
    parser.add_argument("--steps", type=_positive_int, help=hidden)
    parser.add_argument("--epochs", type=_positive_int, help=hidden)
    parser.set_defaults(func=run)


def default_station() -> Path:
    """configs/demo.yaml: in the working directory, else beside the package (a source checkout)."""
    for candidate in (Path("configs/demo.yaml"), Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"):
        if candidate.is_file():
            return candidate
    raise InspectorError(
        "the demo station configs/demo.yaml is not here",
        "run `inspector demo` in the project's checkout, or pass --config path/to/configs/demo.yaml",
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from inspector.config import load_config

    if args.seed < 0:
        raise InspectorError(f"--seed must be 0 or more, got {args.seed}")
    console = Console(stderr=True)
    settings = Settings(args.seed, args.preset, args.size, args.train_clips, args.frames, args.steps, args.epochs)
    station = args.config or default_station()
    load_config(station)  # a missing or broken station fails now, not after minutes of work
    root = args.dir.resolve()
    done = _open_folder(root, settings, force=args.force)
    ran_steps: set[str] = set()
    steps = _steps(root, station, settings, ran_steps, progress=not args.no_progress, console=console)
    ran = False  # once a step runs, every later one runs again: what it made is stale
    began = time.perf_counter()
    for number, step in enumerate(steps, 1):
        head = f"[bold]step {number}/{len(steps)}: {step.name}[/]"
        if not (args.force or ran) and step.name in done and step.finished():
            console.print(f"{head} [green]done before, skipped[/] ({_shown(step.outputs[0])}; --force redoes it)")
            continue
        head += f" — {step.what}"
        console.rule(head, align="left")
        # An interrupted step (training, replay) continues from what it left; otherwise start clean.
        if args.force or ran or step.name in done:
            for path in step.outputs:
                _remove(path, root)
        done -= {later.name for later in steps[number - 1 :]}
        _save_state(root, settings, done)
        started = time.perf_counter()
        step.run()
        ran = True
        ran_steps.add(step.name)
        done.add(step.name)
        _save_state(root, settings, done)
        console.print(f"[green]{step.name} done[/] in {time.perf_counter() - started:.0f} s")
    console.print(
        f"\n[bold]main job finished[/] in {time.perf_counter() - began:.0f} s "
        "([yellow]a DEMO model: its figures and words say nothing about real parts[/])",
        soft_wrap=True,
    )
    console.print(f"calibrated station: {_shown(root / 'station.calibrated.yaml')}", soft_wrap=True)
    console.print(f"HTML report: [bold]{_shown(root / 'report.html')}[/]", soft_wrap=True)
    return 0


def _steps(root: Path, station: Path, settings: Settings, ran: set[str], *, progress: bool, console: Any) -> list[Step]:
    """The main job's steps; ``ran`` fills with those this invocation runs (the last step reads it)."""
    data, tiny, trained = root / "data", root / "models" / "tiny", root / "models" / "demo"
    base_station, calibrated = root / "station.yaml", root / "station.calibrated.yaml"
    heldout_verdicts = root / "heldout-verdicts.jsonl"
    quiet = [] if progress else ["--no-progress"]
    small = _small_options(settings)

    def model() -> None:
        _command(["model", "tiny", str(tiny), "--preset", settings.preset, "--seed", str(settings.seed)])

    def demo_data() -> None:
        _command(["demo-data", str(data), "--seed", str(settings.seed), *small["data"]])

    def train() -> None:
        resume = ["--resume"] if (trained / "state").exists() else []
        _command(["train", "--config", str(base_station), "--model", str(tiny), "--data", str(data / "train"),
                  "--out", str(trained), "--seed", str(settings.seed), "--explain",
                  *small["train"], *resume, *quiet])  # fmt: skip

    def calibrate() -> None:
        _command(["calibrate", "--config", str(base_station), "--data", str(data / "calibration"),
                  "--max-escape", str(MAX_ESCAPE), "--max-uncertain", str(MAX_UNCERTAIN), "--holdout", "0",
                  "--save-verdicts", str(root / "calibration-verdicts.jsonl"), "--out", str(calibrated),
                  *quiet])  # fmt: skip

    def replay() -> None:
        heldout = data / "heldout"
        _command(["replay", str(heldout / "clip.mp4"), "--config", str(calibrated),
                  "--labels", str(heldout / "labels.json"), "--out", str(heldout_verdicts), *quiet])  # fmt: skip

    def evaluate() -> None:
        if "replay" not in ran:  # its summary, with the words, was printed by an earlier run
            _print_words(console, heldout_verdicts)
        _evaluate(root, calibrated, data / "heldout", heldout_verdicts, quiet, console)

    return [
        Step("model", "a tiny RANDOM Qwen3-VL to train from", (tiny,), model, lambda: (tiny / "config.json").is_file()),
        Step("station", "the demo station, pointed at this folder", (base_station,),
             lambda: write_station(station, base_station, trained, data), base_station.is_file),
        Step("data", "training, calibration and held-out clips", (data,), demo_data,
             lambda: all((data / d / "labels.json").is_file() for d in ("heldout", "calibration"))),
        Step("train", "the verdict and its explanation, from the labels", (trained,), train,
             lambda: (trained / "training.json").is_file()),
        Step("calibrate", "thresholds from the calibration clip, not the held-out one",
             (calibrated, root / "calibration-verdicts.jsonl"), calibrate, calibrated.is_file),
        Step("replay", "the held-out clip, scored against its labels", (heldout_verdicts,), replay,
             lambda: _replayed(heldout_verdicts, data / "heldout" / "labels.json")),
        # Always run: reads the verdicts again (seconds) and ends every run with the table.
        Step("evaluate", "held-out figures and the HTML report",
             (root / "report.html", root / "evaluation.json"), evaluate, lambda: False),
    ]  # fmt: skip


def _small_options(settings: Settings) -> dict[str, list[str]]:
    data: list[str] = []
    if settings.size:
        data += ["--size", f"{settings.size[0]}x{settings.size[1]}"]
    if settings.train_clips:
        data += ["--train-clips", str(settings.train_clips)]
    if settings.frames:
        n = str(settings.frames)
        data += ["--frames", n, "--train-frames", n, "--heldout-frames", n, "--calibration-frames", n]
    train: list[str] = []
    if settings.steps:
        train += ["--steps", str(settings.steps)]
    if settings.epochs:
        train += ["--epochs", str(settings.epochs)]
    return {"data": data, "train": train}


def write_station(template: Path, out: Path, model: Path, data: Path) -> None:
    """The demo station with absolute paths into the demo folder (it works from any directory)."""
    import yaml

    from inspector.config import load_config, parse_config

    load_config(template)  # a broken template fails here, naming its own file
    config = yaml.safe_load(template.read_text(encoding="utf-8"))
    config["model"]["path"] = str(model)
    config["source"] = {**(config.get("source") or {}), "uri": str(data / "clip.mp4")}
    config.setdefault("sinks", {})["jsonl"] = {"path": str(out.parent / "results.jsonl")}
    parse_config(config, str(out))
    header = f"# Written by `inspector demo` from {template} (its comments explain the settings).\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _command(argv: list[str]) -> None:
    """Run one `inspector` command in this process; its failure stops the demo with its message."""
    from inspector.cli import build_parser

    log.info("inspector %s", " ".join(argv))
    args = build_parser().parse_args(argv)
    status = int(args.func(args) or 0)
    if status:
        raise InspectorError(
            f"`inspector {argv[0]}` ended with exit status {status}",
            "see its messages above; fix the cause and run `inspector demo` again (finished steps are kept)",
        )


def _evaluate(root: Path, station: Path, heldout: Path, verdicts: Path, quiet: list[str], console: Any) -> None:
    from inspector.cli import build_parser
    from inspector.commands.evaluate_cmd import _write_text, evaluate_and_report

    argv = ["evaluate", "--config", str(station), "--data", str(heldout), "--verdicts", str(verdicts),
            "--html", str(root / "report.html"), *quiet]  # fmt: skip
    evaluation = evaluate_and_report(build_parser().parse_args(argv), console)
    figures = {"clip": str(heldout), "thresholds_from": str(station), **evaluation.summary()}
    _write_text(root / "evaluation.json", json.dumps(figures, indent=1) + "\n")


def _print_words(console: Any, verdicts: Path) -> None:
    from inspector.commands.explanations import print_explanations
    from inspector.evaluation import read_verdicts
    from inspector.explanations import explained

    said = [e for e in map(explained, read_verdicts(verdicts)) if e is not None]
    print_explanations(console, said, len(said), verdicts)


def _shown(path: Path) -> str:
    """A path as the user gave it when it lies under the working directory."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _replayed(verdicts: Path, labels: Path) -> bool:
    from inspector.demo_data import frame_labels
    from inspector.sinks.jsonl import read_outcomes

    return labels.is_file() and len(read_outcomes(verdicts)) >= len(frame_labels(labels))


def _open_folder(root: Path, settings: Settings, *, force: bool) -> set[str]:
    """The steps finished in ``root`` before; refuse a folder that is not a demo's, or one of other settings."""
    state_path = root / STATE_FILE
    if not state_path.exists():
        if root.exists() and any(root.iterdir()):
            raise InspectorError(
                f"{root} is not empty and holds no {STATE_FILE}: it is not a folder `inspector demo` made",
                "choose a new or empty --dir (the demo never deletes files it did not write)",
            )
        return set()
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        made_with, done = state["settings"], set(state["done"])
    except (ValueError, KeyError, TypeError):
        if force:
            return set()
        raise InspectorError(f"{state_path} is damaged", "run again with --force to redo every step") from None
    if made_with != settings.as_json() and not force:
        changed = sorted(k for k, v in settings.as_json().items() if made_with.get(k) != v)
        raise InspectorError(
            f"{root} was made with other settings ({', '.join(changed)} differ)",
            "give another --dir, or add --force to redo every step here",
        )
    return done


def _save_state(root: Path, settings: Settings, done: set[str]) -> None:
    import os

    root.mkdir(parents=True, exist_ok=True)
    state = {"version": STATE_VERSION, "settings": settings.as_json(), "done": sorted(done)}
    partial = root / (STATE_FILE + ".partial")
    partial.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, root / STATE_FILE)


def _remove(path: Path, root: Path) -> None:
    """Delete a step's output, never anything outside the demo folder."""
    if not path.resolve().is_relative_to(root):
        raise InspectorError(f"refusing to delete {path}: it is outside {root}")
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()

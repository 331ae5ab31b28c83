"""Verdicts paired with the labelled frames they judge: from a live Inspector, or read back from JSONL.

Evaluation, calibration and the report all work on ``Prediction`` lists, so calibrating or
re-reporting never reruns a model: the verdict JSONL carries every tile's probabilities.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from inspector.datasets import Dataset, LabelledImage, iter_frames
from inspector.errors import InspectorError
from inspector.frames import Frame

if TYPE_CHECKING:
    from inspector.pipeline import Inspector

T = TypeVar("T")


@dataclass(frozen=True)
class Prediction:
    item: LabelledImage
    verdict: dict[str, Any]  # the FrameVerdict payload, as JSONL carries it (by alias)

    @property
    def tiles(self) -> list[dict[str, Any]]:
        return self.verdict.get("tiles") or []

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(width, height) of the judged frame, from its tile boxes (the global tile spans it)."""
        tiles = self.tiles
        if not tiles:
            return None
        return max(t["bbox"][2] for t in tiles), max(t["bbox"][3] for t in tiles)


def parse_verdict_lines(path: Path, parse: Callable[[dict[str, Any]], T], *, missing_hint: str) -> Iterator[T]:
    """``parse`` of every non-blank line of a verdict JSONL file, in order.

    A missing file, or a line that is not JSON or that ``parse`` rejects (KeyError, TypeError,
    ValueError), is an InspectorError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise InspectorError(f"verdict file {path} does not exist", missing_hint)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                parsed = parse(json.loads(line))
            except (ValueError, KeyError, TypeError) as error:
                raise InspectorError(
                    f"{path}:{number}: not a frame verdict ({error})", "pass a JSONL file of verdicts"
                ) from None
            yield parsed


def _frame_verdict(payload: dict[str, Any]) -> dict[str, Any]:
    payload["source"]["frame_index"]
    payload["verdict"]
    return payload


def read_verdicts(path: Path) -> list[dict[str, Any]]:
    """Every verdict in a JSONL file; a line that is not a frame verdict is an error naming it."""
    verdicts = list(parse_verdict_lines(path, _frame_verdict, missing_hint="pass the --out file of `inspector replay`"))
    if not verdicts:
        raise InspectorError(f"{path} holds no verdicts", "run `inspector replay` or `inspector evaluate` first")
    return verdicts


def write_verdicts(path: Path, verdicts: Sequence[dict[str, Any]]) -> None:
    """All verdicts at once, atomically: an interrupted run leaves no half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for verdict in verdicts:
            handle.write(json.dumps(verdict, separators=(",", ":")) + "\n")
    os.replace(partial, path)


def run_inspector(
    dataset: Dataset,
    inspector: Inspector,
    on_frame: Callable[[Prediction], None] | None = None,
) -> list[Prediction]:
    """Judge every labelled frame (class-folder images fitted to one tile) with ``inspector``."""
    predictions = []
    for item, image in iter_frames(dataset, inspector.planner.tile):
        frame = Frame(image, item.source, item.frame_index, datetime.now(UTC))
        verdict = inspector.inspect(frame).model_dump(mode="json", by_alias=True)
        prediction = Prediction(item, verdict)
        predictions.append(prediction)
        if on_frame:
            on_frame(prediction)
    return predictions


def _resolved(source_id: str) -> str:
    try:
        return str(Path(source_id).expanduser().resolve())
    except (OSError, ValueError):
        return source_id


def match_verdicts(
    dataset: Dataset, verdicts: Sequence[dict[str, Any]], *, where: str = "verdicts"
) -> list[Prediction]:
    """Pair each labelled item with its verdict by (source file, frame index).

    Paths are compared resolved; a verdict whose source no longer exists there (footage
    moved, or a replay run from another directory) matches by file name when unambiguous.
    Verdicts of unlabelled frames are ignored; a labelled item without a verdict is left
    out. No pair at all is an error.
    """
    by_path: dict[tuple[str, int], dict[str, Any]] = {}
    by_name: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for verdict in verdicts:
        source = verdict["source"]
        index = int(source["frame_index"])
        resolved = _resolved(str(source["id"]))
        by_path[(resolved, index)] = verdict
        if not Path(resolved).exists():  # moved footage: fall back to its file name
            by_name.setdefault((Path(str(source["id"])).name, index), []).append(verdict)
    pairs = []
    for item in dataset.images:
        verdict = by_path.get((item.source, item.frame_index))
        if verdict is None:
            named = by_name.get((Path(item.source).name, item.frame_index), [])
            verdict = named[0] if len(named) == 1 else None
        if verdict is not None:
            pairs.append(Prediction(item, verdict))
    if not pairs:
        raise InspectorError(
            f"no verdict in {where} judges a frame of {dataset.source}",
            "the labels must describe the footage the verdicts came from",
        )
    classes = _verdict_classes(pairs)
    if classes is not None and set(classes) != set(dataset.classes):
        raise InspectorError(
            f"{where}: verdicts score classes {sorted(classes)} but the data set uses {sorted(dataset.classes)}",
            "evaluate with the station config that produced the verdicts",
        )
    return pairs


def _verdict_classes(predictions: Sequence[Prediction]) -> list[str] | None:
    for prediction in predictions:
        for tile in prediction.tiles:
            return list(tile["probabilities"])
    return None


def iter_local_tiles(prediction: Prediction) -> Iterator[dict[str, Any]]:
    return (t for t in prediction.tiles if not t.get("is_global"))

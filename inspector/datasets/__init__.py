"""Labelled data in the formats people have -> frames with boxes -> labelled tiles, by ONE rule.

Formats (``load_dataset`` detects them):

- footage + the project's ``labels.json`` (``inspector demo-data`` writes it): a labels file,
  or a directory holding one;
- COCO detection JSON (CVAT, Label Studio, Roboflow): the JSON file, or a directory holding
  exactly one (also under ``annotations/``), images beside it or in ``images/``;
- class folders: a directory of ``ok/``, ``<class>/`` ... folders of single-tile images.

Class names map onto the station's classes (identity, or ``class_map`` / ``--map src=dst``);
an unmapped name is an error. The tile labelling rule is in ``inspector.datasets.rule``;
splits (by clip or image, never by tile) in ``inspector.datasets.split``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from inspector.config import StationFile
from inspector.datasets.base import BBox, Dataset, DatasetError, LabelledBox, LabelledImage, combine
from inspector.datasets.class_folders import class_dirs, load_class_folders
from inspector.datasets.classes import ClassMapper, parse_class_map
from inspector.datasets.coco import load_coco, looks_like_coco, read_json
from inspector.datasets.images import fit_tile, to_bgr_uint8
from inspector.datasets.labels_json import load_labels_json
from inspector.datasets.rule import MIN_BOX_SHARE, MIN_TILE_SHARE, largest_box_class, tile_label, tile_labels
from inspector.datasets.split import split_dataset
from inspector.datasets.tiles import LabelledTile, inspection_frame, iter_frames, labelled_tiles

__all__ = [
    "BBox",
    "ClassMapper",
    "Dataset",
    "DatasetError",
    "LabelledBox",
    "LabelledImage",
    "LabelledTile",
    "MIN_BOX_SHARE",
    "MIN_TILE_SHARE",
    "combine",
    "detect_format",
    "fit_tile",
    "inspection_frame",
    "iter_frames",
    "labelled_tiles",
    "largest_box_class",
    "load_dataset",
    "load_datasets",
    "parse_class_map",
    "split_dataset",
    "tile_label",
    "tile_labels",
    "to_bgr_uint8",
]


def _station_classes(station: StationFile | Sequence[str]) -> tuple[str, ...]:
    if isinstance(station, StationFile):
        return tuple(station.inspection.classes)
    names = [c for c in station if c != "ok"]
    return ("ok", *names)


def detect_format(path: Path) -> tuple[str, Path]:
    """("labels" | "coco" | "folders", the file or directory to read)."""
    if not path.exists():
        raise DatasetError(
            f"data set {path} does not exist", "pass a labels.json, a COCO JSON or a class-folder directory"
        )
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise DatasetError(f"{path} is not a JSON file", "pass a labels.json, a COCO JSON or a directory")
        data = read_json(path)
        if isinstance(data, dict) and "frames" in data and "clip" in data:
            return "labels", path
        if looks_like_coco(data):
            return "coco", path
        raise DatasetError(
            f"{path} is neither a labels.json (clip, frames) nor a COCO detection file (images, annotations)"
        )
    if (path / "labels.json").is_file():
        return "labels", path / "labels.json"
    candidates = sorted(path.glob("*.json")) + sorted((path / "annotations").glob("*.json"))
    coco = [c for c in candidates if looks_like_coco(read_json(c))]
    if len(coco) > 1:
        names = ", ".join(str(c.relative_to(path)) for c in coco)
        raise DatasetError(f"{path} holds several COCO files ({names})", "pass the one you mean as --data FILE")
    if coco:
        return "coco", coco[0]
    if class_dirs(path):
        return "folders", path
    raise DatasetError(
        f"{path} holds no labels.json, no COCO JSON and no class folders",
        "see docs/data.md for the formats",
    )


def load_dataset(
    path: str | Path,
    station: StationFile | Sequence[str],
    class_map: Mapping[str, str] | None = None,
    *,
    verify: bool = True,
) -> Dataset:
    """Load a labelled data set of any supported format, its classes mapped onto the station's.

    ``station``: the station config, or just its defect class names. ``verify``: decode every
    image once now, so a corrupt file fails before any work (videos: the first frame).
    Raises ``DatasetError`` (naming file and item) for bad labels and for an empty data set.
    """
    path = Path(path)
    mapper = ClassMapper(_station_classes(station), class_map)
    kind, target = detect_format(path)
    if kind == "labels":
        dataset = load_labels_json(target, mapper)
    elif kind == "coco":
        dataset = load_coco(target, mapper, verify=verify)
    else:
        dataset = load_class_folders(target, mapper, verify=verify)
    if not dataset.images:
        raise DatasetError(f"{path}: the data set is empty (no labelled frame or image)", "add labelled data")
    return dataset


def load_datasets(
    paths: Sequence[str | Path],
    station: StationFile | Sequence[str],
    class_map: Mapping[str, str] | None = None,
    *,
    verify: bool = True,
) -> Dataset:
    """Several ``--data`` paths as one data set."""
    return combine([load_dataset(p, station, class_map, verify=verify) for p in paths])

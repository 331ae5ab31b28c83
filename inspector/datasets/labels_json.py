"""Footage + the project's labels.json (what `inspector demo-data` writes): one item per labelled frame."""

from __future__ import annotations

from pathlib import Path

from inspector.datasets.base import Dataset, DatasetError, LabelledBox, LabelledImage
from inspector.datasets.classes import ClassMapper


def load_labels_json(path: Path, mapper: ClassMapper) -> Dataset:
    from inspector.demo_data import load_labels
    from inspector.sources.files import VideoFileSource

    labels = load_labels(path)  # validates the schema, boxes inside the frame included
    root = path.parent
    video = (root / labels["clip"]).resolve()
    if not video.is_file():
        raise DatasetError(f"{path}: the clip it names, {video}, does not exist", "keep labels.json beside its video")
    with VideoFileSource(video) as source:  # decodes the first frame: a corrupt video fails now
        frame_count, size = source.frame_count, None
        for frame in source:
            size = frame.size
            break
    if size != (labels["width"], labels["height"]):
        raise DatasetError(
            f"{path}: labels are for {labels['width']}x{labels['height']} frames but {video.name} is "
            f"{size[0]}x{size[1]}"
            if size
            else f"{video} has no frames",
            "the labels belong to another video",
        )
    last = max((f["index"] for f in labels["frames"]), default=-1)
    if frame_count is not None and last >= frame_count:
        raise DatasetError(f"{path}: frame {last} is labelled but {video.name} has {frame_count} frames")
    clip = f"{root.name}/{labels['clip']}"
    images = []
    for n, frame in enumerate(sorted(labels["frames"], key=lambda f: f["index"])):
        boxes = tuple(
            LabelledBox(target, tuple(d["bbox"]))
            for k, d in enumerate(frame["defects"])
            if (target := mapper(d["class"], f"{path}: frames[{n}].defects[{k}]")) != "ok"
        )
        images.append(LabelledImage(f"{clip}#{frame['index']}", clip, boxes, None, str(video), frame["index"]))
    return Dataset(images, mapper.classes, str(path))

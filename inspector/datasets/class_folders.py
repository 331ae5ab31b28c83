"""Class folders: ``ok/``, ``<class>/`` ... of single-tile images, any size, 8/16-bit, grey/RGB/RGBA."""

from __future__ import annotations

import logging
from pathlib import Path

from inspector.datasets.base import Dataset, DatasetError, LabelledImage
from inspector.datasets.classes import ClassMapper
from inspector.datasets.images import check_decodes

log = logging.getLogger(__name__)
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}


def class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_class_folders(root: Path, mapper: ClassMapper, *, verify: bool = True) -> Dataset:
    from inspector.sources.base import natural_key

    items: list[LabelledImage] = []
    problems: list[str] = []
    for folder in class_dirs(root):
        try:
            target = mapper(folder.name, f"{root}: class folder {folder.name}/")
        except DatasetError as error:
            raise DatasetError(
                f"{root}: class folder {folder.name}/ is not a class the config names "
                f"(classes: {list(mapper.classes)})",
                f"rename it, map it with --map {folder.name}=CLASS, or add it to inspection.defects",
            ) from error
        files = sorted((p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")), key=natural_key)
        for file in files:
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                log.warning("%s: not an image file, skipped", file)
                continue
            if verify:
                try:
                    check_decodes(file)
                except DatasetError as error:
                    problems.append(error.problem)
                    continue
            key = f"{root.name}/{file.relative_to(root).as_posix()}"
            items.append(LabelledImage(key, key, (), target, str(file.resolve()), 0))
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DatasetError(f"{root}: {len(problems)} image(s) cannot be used\n  {shown}", "re-export or remove them")
    return Dataset(items, mapper.classes, str(root))

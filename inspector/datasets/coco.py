"""COCO detection JSON, as CVAT, Label Studio and Roboflow export it.

``images`` (id, file_name, width, height), ``annotations`` (image_id, category_id, bbox
[x, y, w, h] in pixels), ``categories`` (id, name). Category names map onto the station's
classes; only categories some annotation uses must map (Roboflow adds an unused parent
category). Box edges are rounded outwards to whole pixels; a box reaching past the image by
less than one pixel (float rounding in exports) is clipped, anything more is an error.
Image files are looked for beside the JSON, then in ``images/`` beside it or one level up.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from inspector.datasets.base import Dataset, DatasetError, LabelledBox, LabelledImage
from inspector.datasets.classes import ClassMapper
from inspector.datasets.images import check_decodes

_MAX_SHOWN = 10


def looks_like_coco(data: object) -> bool:
    return isinstance(data, dict) and isinstance(data.get("images"), list) and "annotations" in data


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})", "re-export the annotations") from None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _find_image(root: Path, file_name: str) -> Path | None:
    name = Path(file_name)
    for candidate in (root / name, root / "images" / name, root.parent / "images" / name, root / name.name):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _box(ann: dict, width: int, height: int) -> tuple[tuple[int, int, int, int] | None, str | None]:
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        return None, f"bbox must be [x, y, w, h] numbers, got {bbox!r}"
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return None, f"bbox {bbox} has no area (w and h must be > 0)"
    if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
        return None, f"bbox {bbox} lies outside the {width}x{height} image"
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    if x1 <= x0 or y1 <= y0:
        return None, f"bbox {bbox} lies outside the {width}x{height} image"
    return (x0, y0, x1, y1), None


def load_coco(path: Path, mapper: ClassMapper, *, verify: bool = True) -> Dataset:
    data = read_json(path)
    if not looks_like_coco(data):
        raise DatasetError(f"{path}: not a COCO detection file (needs 'images' and 'annotations' lists)")
    root = path.parent
    problems: list[str] = []
    categories: dict[Any, str] = {}
    for n, cat in enumerate(data.get("categories") or []):
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
            problems.append(f"categories[{n}]: needs 'id' and 'name'")
        else:
            categories[cat["id"]] = cat["name"]
    records: dict[Any, dict[str, Any]] = {}
    failed: set[Any] = set()  # images already reported: their annotations are not reported again
    for n, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            problems.append(f"images[{n}]: needs 'id' and 'file_name'")
            continue
        if image["id"] in records:
            problems.append(f"images[{n}]: id {image['id']!r} appears twice")
            continue
        file = _find_image(root, image["file_name"])
        failed.add(image["id"])
        if file is None:
            problems.append(f"images[{n}] ({image['file_name']}): file not found beside {path.name} or in images/")
            continue
        width, height = image.get("width"), image.get("height")
        if verify or not (isinstance(width, int) and isinstance(height, int)):
            try:
                actual = check_decodes(file)
            except DatasetError as error:
                problems.append(f"images[{n}] ({image['file_name']}): {error.problem}")
                continue
            if isinstance(width, int) and isinstance(height, int) and (width, height) != actual:
                problems.append(
                    f"images[{n}] ({image['file_name']}): declared {width}x{height} but the file is "
                    f"{actual[0]}x{actual[1]} (boxes would land in the wrong place)"
                )
                continue
            width, height = actual
        failed.discard(image["id"])
        records[image["id"]] = {"file": file, "name": image["file_name"], "size": (width, height), "boxes": []}
    annotations = data["annotations"] if isinstance(data["annotations"], list) else []
    unmapped: dict[str, int] = {}  # category name -> annotations using it
    for n, ann in enumerate(annotations):
        where = f"annotations[{n}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict):
            problems.append(f"{where}: must be an object")
            continue
        record = records.get(ann.get("image_id"))
        if record is None:
            if ann.get("image_id") not in failed:
                problems.append(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
            continue
        where += f" on {record['name']}"
        if ann.get("category_id") not in categories:
            problems.append(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
            continue
        box, problem = _box(ann, *record["size"])
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        name = categories[ann["category_id"]]
        try:
            target = mapper(name, "")
        except DatasetError:
            unmapped[name] = unmapped.get(name, 0) + 1
            continue
        if target != "ok":
            record["boxes"].append(LabelledBox(target, box))
    problems.extend(
        f"category {name!r} ({count} annotation(s)) is not one of the station's classes {list(mapper.classes)}: "
        f"map it with --map {name}=CLASS"
        for name, count in unmapped.items()
    )
    if problems:
        shown = "\n  ".join(problems[:_MAX_SHOWN])
        more = f"\n  ... and {len(problems) - _MAX_SHOWN} more" if len(problems) > _MAX_SHOWN else ""
        raise DatasetError(
            f"{path}: invalid COCO data set ({len(problems)} problem(s))\n  {shown}{more}",
            "fix the export, or map categories onto the station's classes with --map SRC=DST",
        )
    items = []
    for record in records.values():
        key = f"{root.name}/{record['name']}"
        items.append(LabelledImage(key, key, tuple(record["boxes"]), None, str(record["file"]), 0))
    return Dataset(items, mapper.classes, str(path))

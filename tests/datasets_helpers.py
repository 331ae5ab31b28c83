"""Labelled data sets built by the tests' own code (not the demo generator): COCO and class folders."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

DEFECTS = ("scratch", "spot", "crack")


def station_yaml(
    path: Path, model_dir: Path | str = "models/tiny", *, tile: int = 64, global_view: bool = True
) -> Path:
    """A station config with the three test classes and small tiles (fast on CPU)."""
    path.write_text(
        f"""
model: {{path: {model_dir}, batch_size: 8}}
tiling: {{tile: {tile}, overlap: 0.25, global_view: {str(global_view).lower()}}}
inspection:
  product: a grey test panel
  explanation: never
  defects:
    scratch: {{description: a thin bright line, threshold: 0.5}}
    spot: {{description: a dark blob, threshold: 0.5}}
    crack: {{description: a jagged dark line, threshold: 0.5}}
""",
        encoding="utf-8",
    )
    return path


def panel(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    base = rng.integers(110, 150, (height, width, 1), dtype=np.uint8)
    return np.repeat(base, 3, axis=2)


def draw(image: np.ndarray, cls: str, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    colour = {"scratch": (250, 250, 250), "spot": (20, 20, 20), "crack": (0, 0, 120)}[cls]
    image[y0:y1, x0:x1] = colour


def write_coco(
    root: Path,
    *,
    images: int = 6,
    size: tuple[int, int] = (160, 96),
    seed: int = 0,
    categories: tuple[str, ...] = ("Scratch", "Spot", "Crack"),
    layout: str = "roboflow",
) -> Path:
    """A COCO export: half the images carry one box of a category; returns the JSON path.

    ``layout="roboflow"``: images beside ``_annotations.coco.json``; ``"cvat"``:
    ``annotations/instances_default.json`` + ``images/``.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    image_dir = root if layout == "roboflow" else root / "images"
    image_dir.mkdir(exist_ok=True)
    json_path = (
        root / "_annotations.coco.json" if layout == "roboflow" else root / "annotations" / "instances_default.json"
    )
    json_path.parent.mkdir(exist_ok=True)
    cats = [{"id": i + 1, "name": name, "supercategory": "defects"} for i, name in enumerate(categories)]
    if layout == "roboflow":
        cats.insert(0, {"id": 0, "name": "defects", "supercategory": "none"})  # Roboflow's unused parent
    records, annotations = [], []
    for i in range(images):
        image = panel(rng, size)
        if i % 2:
            k = int(rng.integers(len(categories)))
            w, h = int(rng.integers(12, 30)), int(rng.integers(12, 30))
            x, y = int(rng.integers(0, size[0] - w)), int(rng.integers(0, size[1] - h))
            draw(image, DEFECTS[k % len(DEFECTS)], (x, y, x + w, y + h))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 10,
                    "category_id": k + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        name = f"part_{i}.png"
        cv2.imwrite(str(image_dir / name), image)
        records.append({"id": i + 10, "file_name": name, "width": size[0], "height": size[1]})
    json_path.write_text(json.dumps({"images": records, "annotations": annotations, "categories": cats}))
    return json_path


def write_class_folders(root: Path, *, per_class: int = 3, seed: int = 0, kinds: bool = True) -> Path:
    """``ok/`` and one folder per defect class; with ``kinds`` the images vary: 8/16-bit, grey, RGBA, sizes."""
    rng = np.random.default_rng(seed)
    for cls in ("ok", *DEFECTS):
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(rng.integers(40, 140))
            image = panel(rng, (side, side + 8))
            if cls != "ok":
                draw(image, cls, (side // 4, side // 4, side // 2, side // 2))
            kind = i % 4 if kinds else 0
            if kind == 1:
                image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            elif kind == 2:
                image = image.astype(np.uint16) * 257
            elif kind == 3:
                image = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
            cv2.imwrite(str(folder / f"{cls}_{i}.png"), image)
    return root

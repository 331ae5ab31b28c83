"""Labelled sets made by code that shares nothing with ``inspector/demo_data.py``: other textures, other defects.

The demo draws scratches, spots, cracks and holes on scikit-image photographs. These sets are
procedural surfaces (brushed metal, woven fabric, wood grain, cast concrete; grey or tinted)
with other defect shapes (dents, pits, burrs, stains), written in each supported format (COCO,
labels.json + clip, class folders), plus one set of real photographs (scikit-image's bundled
``lfw_subset``: 100 faces and 100 non-face patches, 25 x 25 grey), to measure whether the
default training recipe generalises (``bench/generalise.py``, ``tests/test_train_generalises.py``).
Everything derives from ``seed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FOREIGN_CLASSES = ("dent", "pit", "burr", "stain")
_DESCRIPTIONS = {
    "dent": "a shaded round dent",
    "pit": "a cluster of dark pits",
    "burr": "a bright raised line",
    "stain": "a soft discoloured patch",
}
Box = tuple[int, int, int, int]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    small = rng.normal(0, 1, (max(2, shape[0] // scale), max(2, shape[1] // scale))).astype(np.float32)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def brushed_metal(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    streaks = cv2.blur(rng.normal(0, 1, shape).astype(np.float32), (81, 1)) * 9
    return 140 + 8 * streaks + 3 * _smooth_noise(rng, shape, 60) + rng.normal(0, 2, shape)


def woven_fabric(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    period = rng.uniform(6, 10)
    weave = np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period)
    return 120 + 9 * weave + 4 * _smooth_noise(rng, shape, 40) + rng.normal(0, 2, shape)


def wood_grain(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    cx, cy = rng.uniform(-shape[1], 0), rng.uniform(0, shape[0])
    radius = np.hypot(x - cx, (y - cy) * 0.3) + 12 * _smooth_noise(rng, shape, 80)
    return 130 + 10 * np.sin(radius / rng.uniform(5, 9)) + rng.normal(0, 2, shape)


def cast_concrete(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return 135 + 6 * _smooth_noise(rng, shape, 30) + 4 * _smooth_noise(rng, shape, 8) + rng.normal(0, 3, shape)


TEXTURES: dict[str, Callable[[np.random.Generator, tuple[int, int]], np.ndarray]] = {
    "metal": brushed_metal,
    "fabric": woven_fabric,
    "wood": wood_grain,
    "concrete": cast_concrete,
}


def _stamp(surface: np.ndarray, cls: str, box: Box, rng: np.random.Generator) -> None:
    """Draw defect ``cls`` inside ``box`` (x0, y0, x1, y1) of a float grey surface, in place."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2)
    r = np.hypot(u, v)
    patch = surface[y0:y1, x0:x1]
    if cls == "dent":  # lit from the top left: one bright half, one dark half
        patch += np.where(r < 1, -80 * (u + v) / 1.4 * (1 - r), 0)
    elif cls == "pit":
        for _ in range(int(rng.integers(3, 7))):
            px, py, pr = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, rng.uniform(2, 4.5)
            patch -= np.where(np.hypot(xx - px, yy - py) < pr, 75, 0)
    elif cls == "burr":
        canvas = np.zeros((h, w), np.float32)
        points = np.stack([np.linspace(2, w - 3, 5), rng.uniform(0.2, 0.8, 5) * h], 1).astype(np.int32)
        cv2.polylines(canvas, [points], False, 1.0, thickness=3)
        patch += 70 * cv2.GaussianBlur(canvas, (3, 3), 0)
    else:  # stain: a soft blob, tinted darker
        patch -= 40 * np.clip(1.2 - r, 0, 1)


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # BGR uint8
    boxes: list[tuple[str, Box]]


def make_frames(
    count: int, *, texture: str, size: tuple[int, int] = (384, 256), seed: int = 0,
    classes: tuple[str, ...] = FOREIGN_CLASSES, tint: bool = False, defect_px: tuple[int, int] = (22, 44),
) -> list[Frame]:  # fmt: skip
    """``count`` frames of one texture; every other frame carries one or two defects."""
    rng = np.random.default_rng([seed, 42])
    width, height = size
    colour = rng.uniform(0.8, 1.1, 3) if tint else np.ones(3)
    frames = []
    for i in range(count):
        surface = TEXTURES[texture](rng, (height, width)).astype(np.float32)
        boxes: list[tuple[str, Box]] = []
        for _ in range(int(rng.integers(1, 3)) if i % 2 else 0):
            cls = classes[int(rng.integers(len(classes)))]
            side = int(rng.integers(*defect_px))
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            box = (x, y, x + side, y + side)
            _stamp(surface, cls, box, rng)
            boxes.append((cls, box))
        grey = np.clip(surface, 0, 255)
        image = np.clip(grey[..., None] * colour[None, None, :], 0, 255).astype(np.uint8)
        frames.append(Frame(image, boxes))
    return frames


def station_yaml(path: Path, model_dir: Path | str, *, tile: int = 64, classes: tuple[str, ...] = FOREIGN_CLASSES,
                 product: str = "a machined part") -> Path:  # fmt: skip
    defects = "\n".join(f"    {c}: {{description: {_DESCRIPTIONS.get(c, c)}, threshold: 0.5}}" for c in classes)
    path.write_text(
        f"model: {{path: {model_dir}, batch_size: 16}}\n"
        f"tiling: {{tile: {tile}, overlap: 0.25, global_view: false}}\n"
        f"inspection:\n  product: {product}\n  explanation: never\n  defects:\n{defects}\n",
        encoding="utf-8",
    )
    return path


def write_coco(root: Path, frames: list[Frame], classes: tuple[str, ...] = FOREIGN_CLASSES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, frame in enumerate(frames):
        name = f"img_{i:04d}.png"
        cv2.imwrite(str(root / name), frame.image)
        images.append({"id": i + 1, "file_name": name, "width": frame.image.shape[1], "height": frame.image.shape[0]})
        for cls, (x0, y0, x1, y1) in frame.boxes:
            box = [x0, y0, x1 - x0, y1 - y0]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": classes.index(cls) + 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(classes)]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def write_clip(root: Path, frames: list[Frame], classes: tuple[str, ...] = FOREIGN_CLASSES, fps: float = 4.0) -> Path:
    """An mp4 + labels.json (the project's own clip format)."""
    root.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].image.shape[:2]
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame.image)
    writer.release()
    labels = {
        "version": 1, "clip": "clip.mp4", "width": width, "height": height, "fps": fps, "classes": list(classes),
        "frames": [{"index": i, "label": "NG" if f.boxes else "OK",
                    "defects": [{"class": c, "bbox": list(b)} for c, b in f.boxes]} for i, f in enumerate(frames)],
    }  # fmt: skip
    (root / "labels.json").write_text(json.dumps(labels))
    return root


def write_class_folders(root: Path, frames: list[Frame], tile: int) -> Path:
    """One image per defect (cropped around it) or per OK frame (a random crop): ``ok/``, ``<class>/``."""
    rng = np.random.default_rng(len(frames))
    for i, frame in enumerate(frames):
        height, width = frame.image.shape[:2]
        if frame.boxes:
            cls, (x0, y0, x1, y1) = frame.boxes[0]
            cx = int(np.clip((x0 + x1) // 2 + rng.integers(-tile // 5, tile // 5 + 1), tile // 2, width - tile // 2))
            cy = int(np.clip((y0 + y1) // 2 + rng.integers(-tile // 5, tile // 5 + 1), tile // 2, height - tile // 2))
        else:
            cls, cx, cy = (
                "ok",
                int(rng.integers(tile // 2, width - tile // 2)),
                int(rng.integers(tile // 2, height - tile // 2)),
            )
        crop = frame.image[cy - tile // 2 : cy + tile // 2, cx - tile // 2 : cx + tile // 2]
        (root / cls).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / cls / f"{cls}_{i:04d}.png"), cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY))
    return root


def write_lfw_folders(root: Path, tile: int) -> Path:
    """Real photographs: scikit-image's bundled LFW subset, non-face patches as ``ok/``, faces as ``face/``."""
    from skimage import data

    images = data.lfw_subset()  # (200, 25, 25) float in [0, 1]: 100 faces, then 100 non-faces
    for i, image in enumerate(images):
        cls = "face" if i < 100 else "ok"
        (root / cls).mkdir(parents=True, exist_ok=True)
        pixels = cv2.resize((image * 255).astype(np.uint8), (tile, tile), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(root / cls / f"{i:03d}.png"), pixels)
    return root


def judge_frames(config: Path, model: Path, heldout: Path) -> dict[str, float | int | None]:
    """Held-out frame AUROC and class accuracy through the inference pipeline."""
    from sklearn.metrics import roc_auc_score

    from inspector.config import load_config
    from inspector.datasets import load_dataset
    from inspector.pipeline import Inspector

    station = load_config(config)
    inspector = Inspector.from_config(station, model=str(model))
    dataset = load_dataset(heldout, station)
    scores, truth, right = [], [], []
    for item in dataset.images:
        verdict = inspector.predict(item.load(), source_id=item.source)
        tiles = verdict.tiles or []
        best = max(tiles, key=lambda t: 1.0 - t.probabilities["ok"])
        scores.append(1.0 - best.probabilities["ok"])
        truth.append(item.is_defective)
        if item.is_defective:
            classes = {item.whole_class} if item.whole_class else {b.class_name for b in item.boxes}
            defects = {k: v for k, v in best.probabilities.items() if k != "ok"}
            right.append(max(defects, key=defects.get) in classes)
    return {
        "frames": len(truth),
        "defective": int(sum(truth)),
        "frame_auroc": round(float(roc_auc_score(truth, scores)), 4),
        "class_accuracy": round(float(np.mean(right)), 4) if right else None,
        "classes": len(station.inspection.defects),
    }

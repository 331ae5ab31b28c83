"""A small labelled demo clip: real photographed textures with synthetic defects at known places.

The surface is a texture photograph shipped inside scikit-image (brick, gravel, grass;
bundled, so no download), tinted and mirrored to fill the frame, moving sideways a few
pixels per frame like a conveyor. About half the frames get one or two defects drawn
from an alpha mask, so each label's bbox is exactly where the pixels changed.
Everything is derived from ``seed``: the same seed gives the same labels and frames.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector.errors import SourceError

log = logging.getLogger(__name__)

LABELS_VERSION = 1
CLASSES = ("scratch", "spot", "crack", "missing_piece")
# Texture photographs bundled in scikit-image's wheel (others need pooch and a download).
# A clip's surface is drawn from the first two unless asked for; the others make held-out
# surfaces (a model trained on some surfaces is measured on one it never saw).
SURFACES = ("gravel", "brick", "grass", "moon")
_DRAWN_SURFACES = 2
# BGR multipliers: blasted steel, fired ceramic, green-grey composite, cast grey.
_TINTS = ((1.0, 0.97, 0.92), (0.72, 0.86, 1.0), (0.80, 1.0, 0.85), (0.95, 0.95, 0.95))
_MAX_SIDE = 4096
# Grey-level spread of every surface (the photographs differ: 13 to 39). Low, like a fine matte
# finish: the demo model learns from random weights in minutes only when the defects stand well
# out of the texture (measured: at 24 the held-out tile AUROC stayed ~0.7 after 2,000 steps).
_SURFACE_STD = 10.0
_Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class DemoClip:
    video: Path
    labels_path: Path
    labels: dict[str, Any]


def write_demo_clip(
    out_dir: Path,
    *,
    frames: int = 24,
    size: tuple[int, int] = (1280, 720),
    fps: float = 8.0,
    seed: int = 0,
    surface: str | None = None,
    turned: bool = False,
) -> DemoClip:
    """Write ``out_dir/clip.mp4`` (mp4v) and ``out_dir/labels.json``; return both and the labels.

    ``surface`` (one of ``SURFACES``) overrides the seed's choice of texture; ``turned`` shows it
    upside down: the same material, but no clean frame equals one of an upright clip.
    """
    width, height = _check_args(frames, size, fps, seed)
    if surface is not None and surface not in SURFACES:
        raise SourceError(f"unknown demo surface {surface!r}", f"choose one of {', '.join(SURFACES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    drawn = SURFACES[int(rng.integers(_DRAWN_SURFACES))]  # always drawn: the rest of the clip stays the same
    surface = surface or drawn
    scene = _Scene(surface, (width, height), frames, rng, turned=turned)
    plan = _plan_defects(frames, (width, height), rng)

    video = out_dir / "clip.mp4"
    partial = out_dir / "clip.partial.mp4"  # keep the .mp4 suffix: OpenCV picks the container from it
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise SourceError(
            f"OpenCV cannot write an mp4v video to {partial}",
            "check the folder is writable and that this OpenCV build has FFmpeg (pip install opencv-python-headless)",
        )
    frame_labels = []
    try:
        for index in range(frames):
            image = scene.render(index)
            defects = []
            for cls, seed_i in plan[index]:
                box = _draw_defect(image, cls, np.random.default_rng([seed, index, seed_i]), defects)
                defects.append({"class": cls, "bbox": list(box)})
            writer.write(image)
            frame_labels.append({"index": index, "label": "NG" if defects else "OK", "defects": defects})
    finally:
        writer.release()
    os.replace(partial, video)

    labels: dict[str, Any] = {
        "version": LABELS_VERSION,
        "clip": video.name,
        "width": width,
        "height": height,
        "fps": float(fps),
        "classes": list(CLASSES),
        "seed": seed,
        "surface": f"skimage.data.{surface}",
        **({"turned": True} if turned else {}),
        "frames": frame_labels,
    }
    labels_path = out_dir / "labels.json"
    labels_path.write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
    log.info("wrote %s and %s (%d frames)", video, labels_path, frames)
    return DemoClip(video=video, labels_path=labels_path, labels=labels)


@dataclass(frozen=True)
class DemoSet:
    """What ``write_demo_set`` writes: the demo clip, training clips, a calibration clip and a held-out clip."""

    clip: DemoClip
    train: list[DemoClip]
    heldout: DemoClip | None
    calibration: DemoClip | None = None


# Training clips cycle over these; the held-out clip is on a surface none of them shows.
TRAIN_SURFACES = ("gravel", "brick", "moon")
HELDOUT_SURFACE = "grass"
HELDOUT_SEED_OFFSET = 1000
# The calibration clip: the held-out clip's surface (the product the thresholds are set for, as a
# line calibrates on its own footage), turned upside down and with its own seed, so no frame of it
# is a training or held-out one (an upright clip of the same surface starts on the same clean frame).
CALIBRATION_SEED_OFFSET = 2000


def write_demo_set(
    out_dir: Path,
    *,
    frames: int = 24,
    size: tuple[int, int] = (1280, 720),
    fps: float = 8.0,
    seed: int = 0,
    train_clips: int = 0,
    train_frames: int = 24,
    heldout_frames: int = 48,
    calibration_frames: int = 48,
) -> DemoSet:
    """``out_dir/clip.mp4`` (as ``write_demo_clip``), plus, with ``train_clips``: ``out_dir/train/clip-NN/``
    (seeds seed+1.., surfaces cycling over ``TRAIN_SURFACES``), ``out_dir/heldout/`` (seed
    seed+1000 on ``HELDOUT_SURFACE``: a seed and a surface no training clip has) and, with
    ``calibration_frames``, ``out_dir/calibration/`` (seed seed+2000: the clip thresholds are
    calibrated on, neither training nor held-out)."""
    out_dir = Path(out_dir)
    clip = write_demo_clip(out_dir, frames=frames, size=size, fps=fps, seed=seed)
    if train_clips <= 0:
        return DemoSet(clip, [], None)
    train = [
        write_demo_clip(
            out_dir / "train" / f"clip-{n:02d}",
            frames=train_frames,
            size=size,
            fps=fps,
            seed=seed + 1 + n,
            surface=TRAIN_SURFACES[n % len(TRAIN_SURFACES)],
        )
        for n in range(train_clips)
    ]
    heldout = write_demo_clip(
        out_dir / "heldout", frames=heldout_frames, size=size, fps=fps, seed=seed + HELDOUT_SEED_OFFSET,
        surface=HELDOUT_SURFACE,
    )  # fmt: skip
    calibration = None
    if calibration_frames > 0:
        calibration = write_demo_clip(
            out_dir / "calibration", frames=calibration_frames, size=size, fps=fps,
            seed=seed + CALIBRATION_SEED_OFFSET, surface=HELDOUT_SURFACE, turned=True,
        )  # fmt: skip
    return DemoSet(clip, train, heldout, calibration)


def render_clean_frame(labels: dict[str, Any], index: int) -> np.ndarray:
    """Frame ``index`` of a clip described by ``labels`` (from ``write_demo_clip``) without its defects."""
    width, height, frames, seed = labels["width"], labels["height"], len(labels["frames"]), labels["seed"]
    rng = np.random.default_rng(seed)
    rng.integers(_DRAWN_SURFACES)
    surface = str(labels["surface"]).removeprefix("skimage.data.")
    return _Scene(surface, (width, height), frames, rng, turned=bool(labels.get("turned"))).render(index)


def _check_args(frames: int, size: tuple[int, int], fps: float, seed: int) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if not 1 <= frames <= 100_000:
        raise SourceError(f"frames must be between 1 and 100000, got {frames}")
    if not (64 <= width <= _MAX_SIDE and 64 <= height <= _MAX_SIDE) or width % 2 or height % 2:
        raise SourceError(
            f"size {width}x{height} is not usable",
            f"give even width and height between 64 and {_MAX_SIDE} (the mp4v encoder needs even sides), e.g. 1280x720",
        )
    if seed < 0:
        raise SourceError(f"seed must be 0 or more, got {seed}")
    if not (math.isfinite(fps) and 0 < fps <= 240):
        raise SourceError(f"fps must be above 0 and at most 240, got {fps}")
    return width, height


class _Scene:
    """The clean surface: a texture photograph, tinted, mirrored to fill a strip wider than the frame."""

    def __init__(
        self, surface: str, size: tuple[int, int], frames: int, rng: np.random.Generator, *, turned: bool = False
    ) -> None:
        import skimage.data  # heavy import, only needed here

        width, height = size
        texture = np.asarray(getattr(skimage.data, surface)(), dtype=np.uint8)
        if texture.ndim == 3:
            texture = cv2.cvtColor(texture, cv2.COLOR_RGB2GRAY)
        if turned:
            texture = texture[::-1]
        scale = height / texture.shape[0]
        texture = cv2.resize(texture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        # Conveyor motion: a few px per frame, at least 1 so consecutive frames differ.
        self.step = max(1, round(width * float(rng.uniform(0.004, 0.008))))
        strip_w = width + self.step * frames
        reps = -(-strip_w // texture.shape[1])
        tiles = [texture if i % 2 == 0 else texture[:, ::-1] for i in range(reps)]  # mirrored: no seams
        strip = np.concatenate(tiles, axis=1)[:, :strip_w].astype(np.float32)
        tint = np.array(_TINTS[SURFACES.index(surface)], np.float32)
        # Slight vignetting, as under a ring light.
        ys = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
        shade = 1.0 - 0.12 * ys**2
        # A matte finish: the texture keeps its pattern but spans grey levels ~50-200, so a defect
        # (near black, or a bright scratch) stands out of the surface as it does on a real part.
        surface = (strip - strip.mean()) / max(float(strip.std()), 1.0) * _SURFACE_STD + 125.0
        self.strip = np.clip(surface[:, :, None] * tint * shade[:, :, None], 50, 200).astype(np.uint8)
        self.width = width

    def render(self, index: int) -> np.ndarray:
        x0 = index * self.step
        return self.strip[:, x0 : x0 + self.width].copy()


def _plan_defects(frames: int, size: tuple[int, int], rng: np.random.Generator) -> list[list[tuple[str, int]]]:
    """Which classes go on which frame: half the frames NG, every class used before any repeats."""
    plan: list[list[tuple[str, int]]] = [[] for _ in range(frames)]
    ng = sorted(rng.permutation(frames)[: frames // 2].tolist()) if frames > 1 else []
    pool: list[str] = []
    for count, index in enumerate(ng):
        for k in range(1 if rng.random() < 0.7 else 2):
            if not pool:
                pool = [CLASSES[i] for i in rng.permutation(len(CLASSES))]
            plan[index].append((pool.pop(), count * 2 + k))
    return plan


def _draw_defect(image: np.ndarray, cls: str, rng: np.random.Generator, placed: list[dict[str, Any]]) -> _Box:
    """Draw one defect away from those already placed; return its bbox [x0, y0, x1, y1)."""
    height, width = image.shape[:2]
    unit = min(width, height) / 720.0
    others = [tuple(d["bbox"]) for d in placed]
    for _attempt in range(50):
        alpha, colour = _DRAWERS[cls](rng, (width, height), unit)
        box = _mask_box(alpha)
        if box is not None and not any(_overlaps(box, o) for o in others):
            break
    assert box is not None  # every drawer puts pixels inside the frame
    region = (slice(box[1], box[3]), slice(box[0], box[2]))
    a = alpha[region][:, :, None]
    target = colour(image[region]) if callable(colour) else np.array(colour, np.float32)
    image[region] = np.clip(image[region] * (1 - a) + target * a, 0, 255).astype(np.uint8)
    return box


def _mask_box(alpha: np.ndarray) -> _Box | None:
    ys, xs = np.nonzero(alpha > 0.05)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _overlaps(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _centre(rng: np.random.Generator, size: tuple[int, int], margin: float) -> np.ndarray:
    width, height = size
    m = int(margin)
    return np.array([rng.integers(m, max(m + 1, width - m)), rng.integers(m, max(m + 1, height - m))], np.float64)


def _finish(mask: np.ndarray, unit: float) -> np.ndarray:
    """Soft edges, like a real mark, not an aliased drawing."""
    k = max(3, int(round(2 * unit)) | 1)
    return cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (k, k), 0)


_Colour = tuple[float, float, float] | Callable[[np.ndarray], np.ndarray]


def _scratch(rng: np.random.Generator, size: tuple[int, int], unit: float) -> tuple[np.ndarray, _Colour]:
    """A few thin parallel-ish bright (or dark) line segments."""
    mask = np.zeros(size[::-1], np.uint8)
    centre = _centre(rng, size, 160 * unit)
    angle = rng.uniform(0, math.pi)
    for _ in range(int(rng.integers(1, 4))):
        a = angle + rng.normal(0, 0.05)
        length = rng.uniform(110, 260) * unit
        offset = rng.normal(0, 10 * unit, 2)
        d = np.array([math.cos(a), math.sin(a)]) * length / 2
        p0, p1 = centre + offset - d, centre + offset + d
        thickness = max(3, round(rng.uniform(3, 5) * unit))
        cv2.line(mask, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 255, thickness, cv2.LINE_AA)
    bright = rng.random() < 0.7
    return _finish(mask, unit), ((250.0, 250.0, 250.0) if bright else (12.0, 12.0, 12.0))


def _spot(rng: np.random.Generator, size: tuple[int, int], unit: float) -> tuple[np.ndarray, _Colour]:
    """A dark, irregular, unevenly soaked stain."""
    mask = np.zeros(size[::-1], np.uint8)
    centre = _centre(rng, size, 70 * unit)
    for _ in range(int(rng.integers(3, 7))):
        c = centre + rng.normal(0, 14 * unit, 2)
        axes = (int(rng.uniform(12, 32) * unit) + 2, int(rng.uniform(12, 32) * unit) + 2)
        cv2.ellipse(mask, (int(c[0]), int(c[1])), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
    alpha = _finish(mask, unit * 4)
    # Low-frequency blotches: a stain is darker where more soaked in.
    field = cv2.resize(rng.uniform(0.75, 1.0, (8, 8)).astype(np.float32), size, interpolation=cv2.INTER_CUBIC)
    return alpha * np.clip(field, 0.7, 1.0), (12.0, 18.0, 28.0)  # BGR: a brownish-black stain


def _crack(rng: np.random.Generator, size: tuple[int, int], unit: float) -> tuple[np.ndarray, _Colour]:
    """A jagged dark polyline, sometimes branching."""
    mask = np.zeros(size[::-1], np.uint8)
    point = _centre(rng, size, 150 * unit)
    heading = rng.uniform(0, 2 * math.pi)
    points = [point]
    for _ in range(int(rng.integers(8, 16))):
        heading += rng.normal(0, 0.6)
        point = point + np.array([math.cos(heading), math.sin(heading)]) * rng.uniform(10, 22) * unit
        points.append(point)
    thickness = max(3, round(rng.uniform(3, 6) * unit))
    cv2.polylines(mask, [np.array(points, np.int32)], False, 255, thickness, cv2.LINE_AA)
    if rng.random() < 0.5:
        start = points[len(points) // 2]
        branch = [start + np.array([math.cos(heading + 1), math.sin(heading + 1)]) * 10 * unit * i for i in range(5)]
        cv2.polylines(mask, [np.array(branch, np.int32)], False, 255, max(1, thickness - 1), cv2.LINE_AA)
    return _finish(mask, unit), (8.0, 8.0, 8.0)


def _missing_piece(rng: np.random.Generator, size: tuple[int, int], unit: float) -> tuple[np.ndarray, _Colour]:
    """A chipped-out region: an irregular polygon showing a dark hole."""
    mask = np.zeros(size[::-1], np.uint8)
    centre = _centre(rng, size, 100 * unit)
    n = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = rng.uniform(35, 85, n) * unit
    polygon = centre + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
    cv2.fillPoly(mask, [polygon.astype(np.int32)], 255, cv2.LINE_AA)

    def hole(pixels: np.ndarray) -> np.ndarray:
        # Almost black with a little of the surface's shading left, so it reads as depth.
        return pixels.astype(np.float32) * 0.08 + 4.0

    return _finish(mask, unit), hole


_DRAWERS: dict[str, Callable[[np.random.Generator, tuple[int, int], float], tuple[np.ndarray, _Colour]]] = {
    "scratch": _scratch,
    "spot": _spot,
    "crack": _crack,
    "missing_piece": _missing_piece,
}


# --------------------------------------------------------------------------- reading labels


def load_labels(path: str | Path) -> dict[str, Any]:
    """Read and validate a labels.json written by ``write_demo_clip`` (or by hand, same schema)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"labels file {path} does not exist", "write one with `inspector demo-data DIR`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SourceError(f"{path}: not valid JSON ({error})", "regenerate it with `inspector demo-data DIR`") from None
    problems = _label_problems(data)
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise SourceError(
            f"{path}: invalid labels ({len(problems)} problem(s))\n  {shown}",
            "see inspector/demo_data.py for the labels schema, or regenerate the file",
        )
    return data


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _label_problems(data: object) -> list[str]:
    if not isinstance(data, dict):
        return ["the top level must be an object"]
    problems: list[str] = []
    if data.get("version") != LABELS_VERSION:
        problems.append(f"version: must be {LABELS_VERSION}, got {data.get('version')!r}")
    if not isinstance(data.get("clip"), str) or not data["clip"]:
        problems.append("clip: must be the video file name")
    width, height = data.get("width"), data.get("height")
    for key, value in (("width", width), ("height", height)):
        if not _is_int(value) or value <= 0:
            problems.append(f"{key}: must be a positive integer, got {value!r}")
    fps = data.get("fps")
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not fps > 0:
        problems.append(f"fps: must be a positive number, got {fps!r}")
    classes = data.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        problems.append("classes: must be a non-empty list of class names")
        classes = []
    frames = data.get("frames")
    if not isinstance(frames, list):
        return [*problems, "frames: must be a list"]
    seen: set[int] = set()
    size_ok = _is_int(width) and _is_int(height)
    for n, frame in enumerate(frames):
        where = f"frames[{n}]"
        if not isinstance(frame, dict):
            problems.append(f"{where}: must be an object")
            continue
        index, label, defects = frame.get("index"), frame.get("label"), frame.get("defects")
        if not _is_int(index) or index < 0:
            problems.append(f"{where}.index: must be a non-negative integer, got {index!r}")
        elif index in seen:
            problems.append(f"{where}.index: {index} appears twice")
        else:
            seen.add(index)
        if label not in ("OK", "NG"):
            problems.append(f"{where}.label: must be 'OK' or 'NG', got {label!r}")
        if not isinstance(defects, list):
            problems.append(f"{where}.defects: must be a list")
            continue
        if label == "NG" and not defects:
            problems.append(f"{where}: label NG needs at least one defect")
        if label == "OK" and defects:
            problems.append(f"{where}: label OK must have no defects")
        for k, defect in enumerate(defects):
            problems.extend(
                _defect_problems(f"{where}.defects[{k}]", defect, classes, (width, height) if size_ok else None)
            )
    return problems


def _defect_problems(where: str, defect: object, classes: list[str], size: tuple[int, int] | None) -> list[str]:
    if not isinstance(defect, dict):
        return [f"{where}: must be an object"]
    problems = []
    if defect.get("class") not in classes:
        problems.append(f"{where}.class: {defect.get('class')!r} is not one of {classes}")
    bbox = defect.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_int(v) for v in bbox)):
        return [*problems, f"{where}.bbox: must be [x0, y0, x1, y1] integers, got {bbox!r}"]
    x0, y0, x1, y1 = bbox
    if not (0 <= x0 < x1 and 0 <= y0 < y1):
        problems.append(f"{where}.bbox: needs 0 <= x0 < x1 and 0 <= y0 < y1, got {bbox}")
    elif size is not None and (x1 > size[0] or y1 > size[1]):
        problems.append(f"{where}.bbox: {bbox} lies outside the {size[0]}x{size[1]} frame (x1, y1 are exclusive)")
    return problems


def frame_labels(path: Path) -> dict[int, str]:
    """Frame index -> "OK" | "NG" from a labels file (validated by ``load_labels``)."""
    return {int(frame["index"]): str(frame["label"]) for frame in load_labels(path)["frames"]}

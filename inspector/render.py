"""Pictures of verdicts: defect boxes, labelled boxes and per-class heatmaps drawn on frames.

One module shared by the HTML report, the edge service's evidence JPEGs and the live page, so an
operator sees the same drawing everywhere. Inputs are BGR uint8 frames (OpenCV's layout) and
verdict payloads as dicts (what JSONL and MQTT carry) or ``FrameVerdict`` objects.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from inspector.payloads.verdict import FrameVerdict

# BGR: red for predicted defects, green for labelled (ground-truth) boxes.
PREDICTED = (40, 40, 230)
LABELLED = (60, 200, 60)


def _as_dict(verdict: FrameVerdict | Mapping[str, Any]) -> Mapping[str, Any]:
    return verdict.model_dump(mode="json", by_alias=True) if isinstance(verdict, FrameVerdict) else verdict


def _label(image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    scale = max(0.4, image.shape[1] / 1600)
    thickness = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    y = max(y, h + base + 2)
    cv2.rectangle(image, (x, y - h - base - 2), (x + w + 4, y), colour, cv2.FILLED)
    cv2.putText(image, text, (x + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness)


def draw_boxes(
    image: np.ndarray, boxes: Iterable[tuple[Sequence[int], str]], colour: tuple[int, int, int]
) -> np.ndarray:
    """Draws ``(bbox [x0,y0,x1,y1), caption)`` pairs on a copy of ``image``."""
    out = image.copy()
    thickness = max(2, image.shape[1] // 400)
    for bbox, caption in boxes:
        x0, y0, x1, y1 = (int(v) for v in bbox)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, thickness)
        if caption:
            _label(out, caption, x0, y0, colour)
    return out


def draw_verdict(
    image: np.ndarray,
    verdict: FrameVerdict | Mapping[str, Any],
    labelled: Iterable[Mapping[str, Any]] = (),
) -> np.ndarray:
    """The frame with its predicted defects (class + confidence) and, optionally, labelled boxes.

    ``labelled`` holds ``{"class": str, "bbox": [x0, y0, x1, y1]}`` items (labels.json / COCO).
    """
    payload = _as_dict(verdict)
    out = draw_boxes(image, ((d["bbox"], f"label: {d['class']}") for d in labelled), LABELLED)
    predicted = ((d["bbox"], f"{d['class']} {d['confidence']:.2f}") for d in payload.get("defects", []))
    out = draw_boxes(out, predicted, PREDICTED)
    # Bottom-left: a defect box at the frame's corner puts its own caption at the top-left.
    verdict_colour = PREDICTED if payload.get("verdict") == "NG" else (90, 90, 90)
    _label(out, payload.get("verdict", "?"), 4, out.shape[0] - 4, verdict_colour)
    return out


def probability_map(verdict: FrameVerdict | Mapping[str, Any], size: tuple[int, int], cls: str) -> np.ndarray:
    """Per-pixel probability of ``cls`` (float32, H×W): local tiles stitched back, overlaps averaged.

    ``size`` is the frame's (width, height). The global tile is left out: it covers every pixel
    and would blur the map. Pixels no tile covers (outside the ROI) are 0.
    """
    width, height = size
    total = np.zeros((height, width), np.float32)
    count = np.zeros((height, width), np.float32)
    for tile in _as_dict(verdict).get("tiles") or []:
        if tile.get("is_global"):
            continue
        x0, y0, x1, y1 = tile["bbox"]
        total[y0:y1, x0:x1] += float(tile["probabilities"].get(cls, 0.0))
        count[y0:y1, x0:x1] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def overlay_heatmap(image: np.ndarray, probabilities: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blends a probability map (0..1) over the frame in OpenCV's JET colours."""
    heat = cv2.applyColorMap(np.clip(probabilities * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 1 - alpha, heat, alpha, 0)


def thumbnail(image: np.ndarray, max_side: int = 640) -> np.ndarray:
    """Downscales so the longer side is at most ``max_side`` (never upscales)."""
    scale = max_side / max(image.shape[:2])
    if scale >= 1:
        return image
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode the image as JPEG")
    return buffer.tobytes()


def data_uri(image: np.ndarray, quality: int = 85) -> str:
    """A JPEG ``data:`` URI, for self-contained HTML."""
    return "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(image, quality)).decode("ascii")

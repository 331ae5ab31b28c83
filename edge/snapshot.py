"""Snapshots: the frame being shown to the model (PNG) and its verdict (JSON), side by side on disk."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import cv2

from inspector.frames import Frame
from inspector.payloads.verdict import FrameVerdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotFiles:
    image: Path
    verdict: Path


def save_snapshot(directory: Path, frame: Frame, verdict: FrameVerdict, label: str | None = None) -> SnapshotFiles:
    """Write ``<time>_<frame index>[_label].png`` and ``.json``; raises OSError when the disk refuses."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = frame.captured_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    stem = f"{stamp}_{frame.index:08d}" + (f"_{label}" if label else "")
    image_path = directory / f"{stem}.png"
    verdict_path = directory / f"{stem}.json"
    ok, encoded = cv2.imencode(".png", frame.image)
    if not ok:
        raise OSError(f"OpenCV could not encode frame {frame.index} as PNG")
    # Written under a temporary name then renamed: a reader never sees half a file.
    _write_atomic(image_path, encoded.tobytes())
    _write_atomic(verdict_path, (verdict.to_json() + "\n").encode("utf-8"))
    log.info("snapshot of frame %d saved to %s", frame.index, image_path)
    return SnapshotFiles(image_path, verdict_path)


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)

"""Evidence pictures: a JPEG for every NG or UNCERTAIN verdict, with the defects drawn.

The picture is what the people beside the line look at: the frame with each defect's box,
class and confidence (inspector/render.py ``draw_verdict``, the same drawing as the report
and the live page) and, with ``heatmap``, the worst class's per-tile probability map beside
it. The verdict carries the picture's path (``evidence``). Files are written under a
temporary name and renamed, so a reader never sees half a JPEG.

Retention keeps at most ``max_files`` pictures and none older than ``max_age_s`` (by file
time, oldest removed first). With ``mqtt_snapshot`` the last NG picture is also published,
retained, on ``.../snapshot`` (as Frigate does per camera), so a dashboard shows it at once.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

import cv2
import numpy as np

from inspector.config import EvidenceConfig
from inspector.frames import Frame
from inspector.payloads.verdict import FrameVerdict
from inspector.render import draw_verdict, encode_jpeg, overlay_heatmap, probability_map

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# Pruning lists the folder; doing it on every picture would cost more than the picture.
_PRUNE_EVERY_S = 5.0


def evidence_image(frame: Frame, verdict: FrameVerdict, *, heatmap: bool = False) -> np.ndarray:
    """The frame with the verdict drawn; with ``heatmap`` the worst class's probability map beside it."""
    drawn = draw_verdict(frame.image, verdict)
    if not heatmap or not verdict.tiles:
        return drawn
    classes = [c for c in verdict.tiles[0].probabilities if c != "ok"]
    if not classes:
        return drawn
    cls = (
        verdict.defects[0].class_name
        if verdict.defects
        else max(classes, key=lambda c: max(t.probabilities.get(c, 0.0) for t in verdict.tiles or []))
    )
    heat = overlay_heatmap(frame.image, probability_map(verdict, frame.size, cls))
    cv2.putText(heat, f"p({cls})", (6, heat.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return np.hstack([drawn, heat])


class EvidenceStore:
    """Saves evidence JPEGs, prunes old ones, optionally hands the last NG picture to a publisher."""

    def __init__(
        self,
        config: EvidenceConfig,
        *,
        publish_snapshot: Callable[[bytes], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.directory = config.dir.resolve()
        self._publish_snapshot = publish_snapshot if config.mqtt_snapshot else None
        self._clock = clock
        self._lock = threading.Lock()
        self._last_prune = 0.0
        self.saved = 0
        self.removed = 0
        self.failures = 0

    def attach(self, frame: Frame, verdict: FrameVerdict) -> FrameVerdict:
        """The verdict with its evidence path (NG / UNCERTAIN), or unchanged; a disk problem is logged, never raised.

        Synchronous: the edge service goes through ``EvidenceWriter`` (edge/evidence_worker.py) instead,
        so that drawing, encoding and writing never hold inference up."""
        if not self.wanted(verdict):
            return verdict
        path = self.path_for(frame, verdict)
        if not self.write(frame, verdict, path):
            return verdict
        return verdict.model_copy(update={"evidence": str(path)})

    def wanted(self, verdict: FrameVerdict) -> bool:
        return self.config.enabled and verdict.verdict != "OK"

    def path_for(self, frame: Frame, verdict: FrameVerdict) -> Path:
        """``<dir>/<time>_<source>_<frame>_<verdict>[_<part>].jpg``: known before the picture is drawn."""
        stamp = frame.captured_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        part = f"_{_UNSAFE.sub('_', verdict.source.part_id)}" if verdict.source.part_id else ""
        name = f"{stamp}_{_UNSAFE.sub('_', frame.source_id)[-40:]}_{frame.index:08d}_{verdict.verdict}{part}.jpg"
        return self.directory / name

    def write(self, frame: Frame, verdict: FrameVerdict, path: Path) -> bool:
        """Draw, encode and write the picture at ``path``, publish the last NG; False (logged, counted) on failure."""
        try:
            jpeg = self.save(frame, verdict, path)
        except (OSError, ValueError, cv2.error) as error:
            self.failures += 1
            log.error("evidence for frame %d not saved in %s: %s", frame.index, self.directory, error)
            return False
        if self._publish_snapshot is not None and verdict.verdict == "NG":
            try:
                self._publish_snapshot(jpeg)
            except Exception as error:  # noqa: BLE001 - the picture on disk is what counts
                log.warning("last-NG snapshot not published: %s", error)
        return True

    def save(self, frame: Frame, verdict: FrameVerdict, path: Path) -> bytes:
        """Write the picture at ``path`` (under a temporary name, then renamed); returns its bytes."""
        image = evidence_image(frame, verdict, heatmap=self.config.heatmap)
        jpeg = encode_jpeg(image, self.config.jpeg_quality)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(jpeg)
        os.replace(partial, path)
        self.saved += 1
        if self._clock() - self._last_prune >= _PRUNE_EVERY_S or self.saved % 50 == 0:
            self.prune()
        return jpeg

    def prune(self) -> int:
        """Apply retention now (count, then age); returns how many pictures were removed."""
        with self._lock:
            self._last_prune = self._clock()
            try:
                entries = [(e.stat().st_mtime, e.path) for e in os.scandir(self.directory) if e.name.endswith(".jpg")]
            except FileNotFoundError:
                return 0
            entries.sort()
            horizon = self._clock() - self.config.max_age_s
            excess = len(entries) - self.config.max_files
            doomed = [path for i, (mtime, path) in enumerate(entries) if i < excess or mtime < horizon]
            removed = 0
            for path in doomed:
                try:
                    os.unlink(path)
                    removed += 1
                except FileNotFoundError:
                    pass
                except OSError as error:
                    log.warning("could not remove old evidence %s: %s", path, error)
            self.removed += removed
            if removed:
                log.debug("evidence retention removed %d picture(s)", removed)
            return removed

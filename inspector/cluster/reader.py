"""Frames ``[start, stop)`` of one file source, with the same indices and pixels as reading it from the start.

A cluster worker judges a frame range of a long file without decoding everything before
it: video files seek (OpenCV's FFmpeg seek lands on the exact frame for constant-rate
files with an index; the position is checked and, if the container disagrees, the reader
falls back to decoding from the first frame), image folders and globs index their sorted
file list. A reader remembers where it stopped, so the next range of the same file
continues without a seek.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from inspector.decode import read_image_file  # the one image decoder (never raises)
from inspector.errors import SourceError
from inspector.frames import Frame
from inspector.sources import ImageFilesSource, VideoFileSource, open_source
from inspector.sources.base import FILE_MAX_BAD_READS, open_capture, read_frame, utcnow

log = logging.getLogger(__name__)


@dataclass
class RangeStats:
    """What reading one range met: frames skipped as corrupt (by index slot), whether the file ended."""

    corrupt: int = 0
    ended: bool = False


class RangeReader:
    """Reads ranges of one file source (video file, image folder, glob or image); ``close()`` releases it."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        # open_source validates (missing / corrupt / empty raise SourceError) and names the source.
        source = open_source(uri)
        self.source_id = source.source_id
        self.frame_count: int | None = source.frame_count
        if isinstance(source, ImageFilesSource):
            self._paths = list(source.paths)
            source.close()
            self._cap: cv2.VideoCapture | None = None
        elif isinstance(source, VideoFileSource):
            source.close()
            self._paths = []
            self._cap = None
        else:  # pragma: no cover - open_source only returns live sources for cameras and URLs
            source.close()
            raise SourceError(
                f"{uri} is a live source; a cluster replay reads recorded files only",
                "pass video files, image folders or globs",
            )
        self._next = 0  # index the open capture will decode next

    @property
    def is_video(self) -> bool:
        return not self._paths

    def frames(self, start: int, stop: int | None, stats: RangeStats) -> Iterator[Frame]:
        """Frames with ``start <= index < stop`` (``stop=None``: to the end), in order."""
        if self.is_video:
            yield from self._video_frames(start, stop, stats)
        else:
            yield from self._image_frames(start, stop, stats)

    def _image_frames(self, start: int, stop: int | None, stats: RangeStats) -> Iterator[Frame]:
        end = len(self._paths) if stop is None else min(stop, len(self._paths))
        for index in range(start, end):
            path = self._paths[index]
            image = read_image_file(path)
            if image is None:
                stats.corrupt += 1
                log.warning("%s: cannot decode image %s; skipped", self.source_id, path)
                continue
            yield Frame(image, self.source_id, index, utcnow(), meta={"path": str(path)})
        stats.ended = end >= len(self._paths)

    def _video_frames(self, start: int, stop: int | None, stats: RangeStats) -> Iterator[Frame]:
        self._position_at(start)
        assert self._cap is not None
        while stop is None or self._next < stop:
            image, index = self._read(stats)
            if image is None:
                stats.ended = True
                return
            if stop is not None and index >= stop:
                # Corrupt slots carried us past the range: the frame belongs to the next range.
                self.close()
                return
            yield Frame(
                image, self.source_id, index, utcnow(), meta={"pos_ms": float(self._cap.get(cv2.CAP_PROP_POS_MSEC))}
            )

    def _read(self, stats: RangeStats) -> tuple[np.ndarray | None, int]:
        """The next good frame and its index; corrupt frames are counted as index slots, like a local replay."""
        assert self._cap is not None
        bad = 0
        while bad < FILE_MAX_BAD_READS:
            image = read_frame(self._cap)
            if image is not None:
                index = self._next + bad
                self._next = index + 1
                stats.corrupt += bad
                return image, index
            bad += 1
        return None, self._next

    def _position_at(self, start: int) -> None:
        if self._cap is not None and self._next == start:
            return  # continuing the previous range: no seek
        self._reopen()
        if start == 0:
            return
        assert self._cap is not None
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        if int(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) == start:
            self._next = start
            return
        # The container cannot seek to an exact frame: decode from the start instead (slow, exact).
        log.warning("%s: cannot seek to frame %d; decoding from the first frame", self.source_id, start)
        cap = self._reopen()
        while self._next < start and cap.grab():
            self._next += 1

    def _reopen(self) -> cv2.VideoCapture:
        self.close()
        cap = open_capture(self.uri, open_timeout_s=30.0, read_timeout_s=30.0)
        if cap is None:
            raise SourceError(
                f"OpenCV cannot open video file {self.uri} on this worker",
                "every node must read the same file at the same path (a shared or replicated folder)",
            )
        self._cap, self._next = cap, 0
        return cap

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

"""File sources: every frame of a video file (optionally paced, looped) or of an image folder / glob."""

from __future__ import annotations

import glob as globlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from inspector.decode import read_image_file
from inspector.errors import SourceError
from inspector.frames import Frame
from inspector.sources.base import (
    FILE_MAX_BAD_READS,
    IMAGE_EXTENSIONS,
    FrameSource,
    capture_fps,
    natural_key,
    open_capture,
    read_frame,
    utcnow,
)

log = logging.getLogger(__name__)


class VideoFileSource(FrameSource):
    """Every frame of a video file; ``pace`` sleeps to the recorded fps, ``loop`` starts over.

    ``clock`` and ``sleep`` exist so tests can check pacing without measuring time.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        pace: bool = False,
        loop: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        super().__init__(str(path))
        self.pace = pace
        self.loop = loop
        self._clock = clock
        # Default sleep wakes up on close(), so a paced replay stops promptly.
        self._sleep = sleep or self._closed.wait
        self._lock = threading.Lock()
        self._check_file()
        self._cap = self._open()
        first = read_frame(self._cap)
        if first is None:
            self._cap.release()
            raise SourceError(
                f"video file {self.path} has no decodable first frame (corrupt, empty or truncated)",
                "check it with `ffprobe` or re-export it; an MP4 whose recording was cut off is unreadable",
            )
        self.fps = capture_fps(self._cap)
        self._expected = max(int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
        self.frame_count = self._expected or None
        self._pending: np.ndarray | None = first
        self._pending_pos_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        self._next_index = 0  # index of the next frame slot in the file (continues across loops)
        self._lap_start = 0
        self._lap = 0
        self._due: float | None = None
        if pace and self.fps is None:
            log.warning("%s: no recorded frame rate; pace=True has no effect", self.source_id)

    def _check_file(self) -> None:
        if not self.path.exists():
            raise SourceError(
                f"video file {self.path} does not exist",
                "pass an existing video file, an image folder or glob, a camera index or an rtsp:// / http:// URL",
            )
        if not self.path.is_file():
            raise SourceError(f"{self.path} is not a regular file", "pass a video file, an image folder or a glob")
        try:
            with self.path.open("rb"):
                pass
        except OSError as error:
            raise SourceError(
                f"video file {self.path} cannot be read: {error.strerror}", "check its permissions"
            ) from None

    def _open(self) -> cv2.VideoCapture:
        cap = open_capture(str(self.path), open_timeout_s=30.0, read_timeout_s=30.0)
        if cap is None:
            raise SourceError(
                f"OpenCV cannot open video file {self.path}: it is corrupt, truncated "
                "(an MP4 cut off before its index was written) or not a video format FFmpeg knows",
                "check it with `ffprobe`; re-export or re-encode it (e.g. `ffmpeg -i in -c:v libx264 out.mp4`)",
            )
        return cap

    def __next__(self) -> Frame:
        with self._lock:
            while True:
                if self._closed.is_set():
                    raise StopIteration
                image, index, pos_ms = self._read_next()
                if image is not None:
                    break
                if not self._end_of_lap():
                    raise StopIteration
        self.stats.frames_read += 1
        if self.pace and self.fps:
            self._wait_for_slot()
        return Frame(
            image=image,
            source_id=self.source_id,
            index=index,
            captured_at=utcnow(),
            meta={"pos_ms": pos_ms, "loop": self._lap},
        )

    def _read_next(self) -> tuple[np.ndarray | None, int, float]:
        """The next good frame with its index, or (None, ...) at the end of the file."""
        if self._pending is not None:
            image, self._pending = self._pending, None
            index = self._next_index
            self._next_index += 1
            return image, index, self._pending_pos_ms
        bad = 0
        while bad < FILE_MAX_BAD_READS:
            image = read_frame(self._cap)
            if image is None:
                bad += 1
                continue
            if bad:
                # Reads failed, then the stream went on: those were corrupt frames, skipped.
                self.stats.frames_skipped_corrupt += bad
                log.warning(
                    "%s: skipped %d corrupt frame(s) before frame %d", self.source_id, bad, self._next_index + bad
                )
            index = self._next_index + bad
            self._next_index = index + 1
            return image, index, float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        return None, self._next_index, 0.0

    def _end_of_lap(self) -> bool:
        """Account for the finished pass through the file; True when another pass starts."""
        got = self._next_index - self._lap_start
        if self._expected > 0 and got < self._expected - 1:
            # The container promised more frames than it delivered (1 frame of slack: some
            # containers estimate the count from the duration).
            self.stats.truncated = True
            self.stats.frames_missing += self._expected - got
            log.warning(
                "%s: ended after %d of %d frames; the file looks truncated", self.source_id, got, self._expected
            )
        if not self.loop or got == 0:
            return False
        self._cap.release()
        try:
            self._cap = self._open()
        except SourceError as error:
            log.error("%s: cannot reopen for the next loop: %s", self.source_id, error.problem)
            return False
        self._lap += 1
        self._lap_start = self._next_index
        return True

    def _wait_for_slot(self) -> None:
        """Sleep until this frame's slot at the recorded fps; never accumulate debt when late."""
        interval = 1.0 / float(self.fps or 1.0)
        now = self._clock()
        if self._due is None or self._due < now:
            self._due = now
        delay = self._due - now
        if delay > 0:
            self._sleep(delay)
        self._due += interval

    def close(self) -> None:
        super().close()
        with self._lock:
            self._cap.release()


# --------------------------------------------------------------------------- image folders / globs


class ImageFilesSource(FrameSource):
    """Each image file is a frame (index = position in the sorted list); unreadable ones are skipped."""

    def __init__(self, paths: Sequence[Path], source_id: str, *, loop: bool = False) -> None:
        super().__init__(source_id)
        if not paths:
            raise SourceError(f"{source_id}: no images to read", "pass a folder or glob that contains images")
        self.paths = list(paths)
        self.frame_count = len(self.paths)
        self.loop = loop
        self._position = 0
        self._lap = 0
        self._lap_good = 0

    def __next__(self) -> Frame:
        while not self._closed.is_set():
            if self._position >= len(self.paths) * (self._lap + 1):
                if not self.loop or self._lap_good == 0:
                    break
                self._lap += 1
                self._lap_good = 0
            index = self._position
            path = self.paths[index % len(self.paths)]
            self._position += 1
            image = read_image_file(path)
            if image is None:
                self.stats.frames_skipped_corrupt += 1
                log.warning("%s: cannot decode image %s; skipped", self.source_id, path)
                continue
            self._lap_good += 1
            self.stats.frames_read += 1
            return Frame(
                image=image, source_id=self.source_id, index=index, captured_at=utcnow(), meta={"path": str(path)}
            )
        raise StopIteration


def _image_files(paths: Sequence[Path]) -> list[Path]:
    return sorted((p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key)


def folder_source(folder: Path, loop: bool) -> ImageFilesSource:
    files = _image_files(list(folder.iterdir()))
    if not files:
        raise SourceError(
            f"folder {folder} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})",
            "put images in it, or pass a video file or a glob such as 'frames/*.png'",
        )
    return ImageFilesSource(files, str(folder), loop=loop)


def glob_source(pattern: str, loop: bool) -> ImageFilesSource:
    matched = [Path(p) for p in globlib.glob(str(Path(pattern).expanduser()), recursive=True)]
    files = _image_files(matched)
    if not files:
        what = f"{len(matched)} file(s), none of them images" if matched else "nothing"
        raise SourceError(
            f"glob {pattern!r} matched {what}",
            "check the pattern (quote it so the shell does not expand it) and the image extensions",
        )
    return ImageFilesSource(files, pattern, loop=loop)

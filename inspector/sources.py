"""Frame sources: video files, image folders/globs, cameras and RTSP/HTTP streams.

``open_source`` classifies a URI, validates it before any work starts (a missing or
corrupt file is a ``SourceError`` naming the fix, never an OpenCV traceback) and returns
a ``FrameSource``: an iterable of ``Frame`` and a context manager.

Files yield every frame (index = frame number in the file), optionally paced at the
recorded fps. Live sources (camera, RTSP/HTTP) run a background reader that keeps only
the freshest frame, so a slow consumer inspects what the line looks like *now*, and
reconnect with exponential backoff when the stream fails or ends.
"""

from __future__ import annotations

import glob as globlib
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import cv2
import numpy as np

from inspector.config import ReconnectConfig
from inspector.errors import SourceError
from inspector.frames import Frame

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"})
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https"})
_GLOB_CHARS = re.compile(r"[*?\[]")
# Query keys whose values are secrets in camera URLs (e.g. ``?user=admin&password=...``).
_SECRET_KEYS = frozenset(
    {
        "password",
        "pass",
        "passwd",
        "pwd",
        "token",
        "access_token",
        "key",
        "apikey",
        "api_key",
        "auth",
        "secret",
        "signature",
        "sig",
        "user",
        "username",
    }
)

# A file read that fails this many times in a row is the end of the file (or of what is left
# of it); fewer failures followed by a good frame are corrupt frames, skipped.
_FILE_MAX_BAD_READS = 30
# A live stream that fails this many reads in a row (or none good for read_timeout_s) is lost.
_LIVE_MAX_BAD_READS = 3

SourceKind = Literal["camera", "stream", "folder", "glob", "image", "video"]


@dataclass
class SourceStats:
    """Counters a service can export; updated by the source as it reads.

    ``frames_read`` counts decoded frames (for live sources, including ones later dropped
    as stale); ``frames_missing`` counts frames a container promised but never delivered
    (a truncated file), and ``truncated`` says that happened at least once.
    """

    frames_read: int = 0
    frames_skipped_corrupt: int = 0
    reconnects: int = 0
    dropped_stale: int = 0
    frames_missing: int = 0
    truncated: bool = False


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- helpers


def redact_uri(uri: str) -> str:
    """The URI without ``user:password@`` and without secret-looking query values."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    # rpartition: an unencoded '@' inside the password must not leak its tail.
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_KEYS for k, _ in pairs):
            query = urlencode([(k, "***" if k.lower() in _SECRET_KEYS else v) for k, v in pairs], safe="*/:")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def backoff_delays(initial_s: float, max_s: float) -> Iterator[float]:
    """initial_s, 2*initial_s, 4*initial_s, ... capped at max_s, forever."""
    delay = min(initial_s, max_s)
    while True:
        yield delay
        delay = min(delay * 2.0, max_s)


def source_kind(uri: str | int | Path) -> SourceKind:
    """Which kind of source ``uri`` names (no I/O beyond stat calls)."""
    if isinstance(uri, bool):
        raise SourceError(f"source {uri!r} is not a file, folder, glob, camera index or URL")
    if isinstance(uri, int):
        return "camera"
    text = str(uri).strip()
    if text.isdigit():
        return "camera"
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme in STREAM_SCHEMES:
            return "stream"
        raise SourceError(
            f"source {redact_uri(text)!r} uses the unsupported scheme {scheme}://",
            "use rtsp://, rtsps://, http:// or https:// for streams, or a local file path",
        )
    path = Path(text).expanduser()
    if path.is_dir():
        return "folder"
    if not path.exists() and _GLOB_CHARS.search(text):
        return "glob"
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return "image"
    return "video"


def _natural_key(path: Path) -> list[object]:
    # frame_2.png before frame_10.png, as a person numbering files expects.
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _ffmpeg_backend() -> int:
    return cv2.CAP_FFMPEG if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY


def _open_capture(target: str | int, *, open_timeout_s: float, read_timeout_s: float) -> cv2.VideoCapture | None:
    """An opened VideoCapture or None; OpenCV exceptions become None (the caller explains)."""
    try:
        if isinstance(target, int):
            cap = cv2.VideoCapture(target)
        else:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                int(open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(read_timeout_s * 1000),
            ]
            cap = cv2.VideoCapture(target, _ffmpeg_backend(), params)
    except cv2.error as error:
        log.debug("OpenCV could not open %r: %s", target, error)
        return None
    if not cap.isOpened():
        cap.release()
        return None
    return cap


def _capture_fps(cap: cv2.VideoCapture) -> float | None:
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    return fps if math.isfinite(fps) and 0 < fps < 1000 else None


def _read(cap: cv2.VideoCapture) -> np.ndarray | None:
    try:
        ok, image = cap.read()
    except cv2.error as error:
        log.debug("OpenCV read failed: %s", error)
        return None
    if not ok or image is None or image.size == 0:
        return None
    return _as_bgr(image)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Frames are BGR uint8 (H, W, 3) whatever the decoder produced."""
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(float(image.max()), 1.0))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


# --------------------------------------------------------------------------- base


class FrameSource:
    """Iterable of ``Frame``; a context manager; ``close()`` releases the device or file.

    ``healthy`` is False once closed and, for live sources, while disconnected or
    reconnecting: an edge service reports a degraded status from it. ``frame_count`` is the
    number of frames in one pass (files, as the container reports it; images), else None.
    """

    source_id: str
    stats: SourceStats
    fps: float | None = None
    is_live: bool = False
    frame_count: int | None = None

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self.stats = SourceStats()
        self._closed = threading.Event()

    @property
    def healthy(self) -> bool:
        return not self._closed.is_set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        raise NotImplementedError

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source_id!r})"


# --------------------------------------------------------------------------- video files


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
        first = _read(self._cap)
        if first is None:
            self._cap.release()
            raise SourceError(
                f"video file {self.path} has no decodable first frame (corrupt, empty or truncated)",
                "check it with `ffprobe` or re-export it; an MP4 whose recording was cut off is unreadable",
            )
        self.fps = _capture_fps(self._cap)
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
        cap = _open_capture(str(self.path), open_timeout_s=30.0, read_timeout_s=30.0)
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
            captured_at=_utcnow(),
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
        while bad < _FILE_MAX_BAD_READS:
            image = _read(self._cap)
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
            image = _imread(path)
            if image is None:
                self.stats.frames_skipped_corrupt += 1
                log.warning("%s: cannot decode image %s; skipped", self.source_id, path)
                continue
            self._lap_good += 1
            self.stats.frames_read += 1
            return Frame(
                image=image, source_id=self.source_id, index=index, captured_at=_utcnow(), meta={"path": str(path)}
            )
        raise StopIteration


def _imread(path: Path) -> np.ndarray | None:
    try:
        # imdecode of the bytes: works for any path encoding and never raises on garbage.
        data = np.fromfile(str(path), dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except (OSError, cv2.error) as error:
        log.debug("cannot read %s: %s", path, error)
        return None
    return None if image is None else _as_bgr(image)


def _image_files(paths: Sequence[Path]) -> list[Path]:
    return sorted((p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key)


def _folder_source(folder: Path, loop: bool) -> ImageFilesSource:
    files = _image_files(list(folder.iterdir()))
    if not files:
        raise SourceError(
            f"folder {folder} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})",
            "put images in it, or pass a video file or a glob such as 'frames/*.png'",
        )
    return ImageFilesSource(files, str(folder), loop=loop)


def _glob_source(pattern: str, loop: bool) -> ImageFilesSource:
    matched = [Path(p) for p in globlib.glob(str(Path(pattern).expanduser()), recursive=True)]
    files = _image_files(matched)
    if not files:
        what = f"{len(matched)} file(s), none of them images" if matched else "nothing"
        raise SourceError(
            f"glob {pattern!r} matched {what}",
            "check the pattern (quote it so the shell does not expand it) and the image extensions",
        )
    return ImageFilesSource(files, pattern, loop=loop)


# --------------------------------------------------------------------------- live sources


class LiveSource(FrameSource):
    """A camera or network stream read by a background thread that keeps only the freshest frame.

    ``index`` counts frames decoded from the device since the source opened (across
    reconnects), so gaps show frames dropped as stale. Iteration waits for a new frame,
    waking every ``poll_s`` to notice ``close()``; ``read(timeout_s)`` returns None on timeout.
    With ``wait_for_first`` a source that cannot be opened at start is retried in the
    background (``healthy`` stays False) instead of raising ``SourceError``.
    ``target`` may be any string OpenCV's FFmpeg backend opens, a video file included
    (how the tests exercise reconnection: a file "stream" ends and is reopened).
    """

    is_live = True

    def __init__(
        self,
        target: str | int,
        source_id: str | None = None,
        *,
        reconnect: ReconnectConfig | None = None,
        wait_for_first: bool = False,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        poll_s: float = 0.5,
    ) -> None:
        super().__init__(source_id or _live_id(target))
        self.target = target
        self.reconnect = reconnect or ReconnectConfig()
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.poll_s = poll_s
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._connected = False
        self._seq = 0
        cap = self._try_open()
        if cap is None:
            if not wait_for_first:
                raise SourceError(*self._open_failure())
            log.warning("%s: not available yet; retrying in the background", self.source_id)
        else:
            self._connected = True
            self.fps = _capture_fps(cap)
        self._thread = threading.Thread(target=self._run, args=(cap,), name=f"source:{self.source_id}", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        return self._connected and not self._closed.is_set()

    def _try_open(self) -> cv2.VideoCapture | None:
        return _open_capture(self.target, open_timeout_s=self.open_timeout_s, read_timeout_s=self.read_timeout_s)

    def _open_failure(self) -> tuple[str, str]:
        """Problem and hint for a source that would not open, as specific as we can tell."""
        if isinstance(self.target, int):
            return (
                f"camera {self.target} cannot be opened (no such device, or it is busy)",
                "check the camera is connected and not used by another process; `v4l2-ctl --list-devices` "
                "lists /dev/video* indices",
            )
        parts = urlsplit(self.target)
        if parts.scheme.lower() in STREAM_SCHEMES and parts.hostname:
            default_port = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}[parts.scheme.lower()]
            try:
                port = parts.port or default_port
            except ValueError:
                return (f"stream {self.source_id} has an invalid port", "write the URL as scheme://host:port/path")
            try:
                with socket.create_connection((parts.hostname, port), timeout=min(self.open_timeout_s, 3.0)):
                    pass
            except OSError as error:
                return (
                    f"stream {self.source_id} is unreachable: cannot connect to {parts.hostname}:{port} "
                    f"({error.strerror or error})",
                    "check the camera is powered and on the network, and the host and port in the URL",
                )
            return (
                f"stream {self.source_id}: the server answers at {parts.hostname}:{port} but no video stream "
                f"could be opened within {self.open_timeout_s:g} s",
                "check the path, the credentials and that the codec is one FFmpeg decodes (H.264/H.265/MJPEG)",
            )
        return (f"live source {self.source_id} cannot be opened", "check the path or URL")

    def _run(self, cap: cv2.VideoCapture | None) -> None:
        delays = backoff_delays(self.reconnect.initial_s, self.reconnect.max_s)
        ever_connected = cap is not None
        bad = 0
        last_good = time.monotonic()
        try:
            while not self._closed.is_set():
                if cap is None:
                    cap = self._try_open()
                    if cap is None:
                        delay = next(delays)
                        log.debug("%s: open failed; retrying in %.2f s", self.source_id, delay)
                        self._closed.wait(delay)
                        continue
                    if ever_connected:
                        self.stats.reconnects += 1
                        log.info("%s: reconnected", self.source_id)
                    ever_connected = True
                    self.fps = _capture_fps(cap) or self.fps
                    self._connected = True
                    bad = 0
                    last_good = time.monotonic()
                image = _read(cap)
                if self._closed.is_set():
                    break
                if image is None:
                    bad += 1
                    if bad < _LIVE_MAX_BAD_READS and time.monotonic() - last_good < self.read_timeout_s:
                        continue
                    cap.release()
                    cap = None
                    self._connected = False
                    delay = next(delays)
                    log.warning("%s: stream lost or ended; reconnecting in %.2f s", self.source_id, delay)
                    self._closed.wait(delay)
                    continue
                if bad:
                    self.stats.frames_skipped_corrupt += bad
                    bad = 0
                # A good frame proves the connection: the next failure starts the backoff afresh.
                delays = backoff_delays(self.reconnect.initial_s, self.reconnect.max_s)
                last_good = time.monotonic()
                self._publish(image)
        except Exception:  # the reader must not die silently: log, mark unhealthy, stop
            log.exception("%s: reader thread failed", self.source_id)
        finally:
            self._connected = False
            if cap is not None:
                cap.release()
            with self._cond:
                self._cond.notify_all()

    def _publish(self, image: np.ndarray) -> None:
        frame = Frame(image=image, source_id=self.source_id, index=self._seq, captured_at=_utcnow())
        self._seq += 1
        self.stats.frames_read += 1
        with self._cond:
            if self._latest is not None:
                self.stats.dropped_stale += 1  # nobody took the previous one: it is stale now
            self._latest = frame
            self._cond.notify_all()

    def read(self, timeout_s: float | None = None) -> Frame | None:
        """The freshest frame not yet returned, waiting up to ``timeout_s``; None on timeout or close."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._latest is None:
                if self._closed.is_set() or not self._thread.is_alive():
                    return None
                remaining = self.poll_s if deadline is None else min(self.poll_s, deadline - time.monotonic())
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._latest = self._latest, None
            return frame

    def __next__(self) -> Frame:
        while not self._closed.is_set():
            frame = self.read(self.poll_s)
            if frame is not None:
                return frame
            if not self._thread.is_alive() and not self._closed.is_set():
                # The reader failed (logged where it happened): end with an error so the owner reopens us.
                raise SourceError(f"{self.source_id}: the reader thread stopped unexpectedly", "reopen the source")
        raise StopIteration

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the reader; a read blocked inside OpenCV finishes on its own (daemon thread)."""
        super().close()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.debug("%s: reader still inside OpenCV; it will exit after its read times out", self.source_id)


def _live_id(target: str | int) -> str:
    return f"camera:{target}" if isinstance(target, int) else redact_uri(target)


# --------------------------------------------------------------------------- entry point


def open_source(
    uri: str | int | Path,
    *,
    pace: bool = False,
    loop: bool = False,
    reconnect: ReconnectConfig | None = None,
    wait_for_first: bool = False,
) -> FrameSource:
    """Open a camera index, rtsp(s)/http(s) URL, image folder, glob, image or video file.

    Raises ``SourceError`` before any work starts when the source is missing, corrupt or
    empty. ``pace``/``loop`` apply to files; ``reconnect`` and ``wait_for_first`` to live
    sources (``wait_for_first=True``: start even when the camera is down and keep retrying).
    """
    kind = source_kind(uri)
    if kind in ("camera", "stream"):
        if pace or loop:
            log.debug("pace/loop ignore live source %s", uri)
        target: str | int = int(str(uri).strip()) if kind == "camera" else str(uri).strip()
        return LiveSource(target, reconnect=reconnect, wait_for_first=wait_for_first)
    if pace:
        if kind != "video":
            log.warning("pace=True applies to video files only; images are read as fast as they are consumed")
    path = Path(str(uri)).expanduser()
    if kind == "folder":
        return _folder_source(path, loop)
    if kind == "glob":
        return _glob_source(str(uri), loop)
    if kind == "image":
        if not path.is_file():
            raise SourceError(f"image file {path} does not exist", "pass an existing image, folder, glob or video")
        return ImageFilesSource([path], str(uri), loop=loop)
    return VideoFileSource(uri if isinstance(uri, Path) else str(uri), pace=pace, loop=loop)

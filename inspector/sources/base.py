"""What every frame source shares: the ``FrameSource`` base, stats, URI helpers, OpenCV capture helpers."""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import cv2
import numpy as np

from inspector.decode import to_bgr_uint8
from inspector.errors import SourceError
from inspector.frames import Frame

log = logging.getLogger(__name__)


IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"})
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https"})
CAMERA_SCHEMES = frozenset({"pylon", "genicam"})  # GenICam cameras (inspector/sources/genicam/)
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
FILE_MAX_BAD_READS = 30
# A live stream that fails this many reads in a row (or none good for read_timeout_s) is lost.
LIVE_MAX_BAD_READS = 3

SourceKind = Literal["camera", "stream", "genicam", "folder", "glob", "image", "video"]


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


def utcnow() -> datetime:
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
        if scheme in CAMERA_SCHEMES:
            return "genicam"
        raise SourceError(
            f"source {redact_uri(text)!r} uses the unsupported scheme {scheme}://",
            "use rtsp://, rtsps://, http:// or https:// for streams, pylon:// or genicam:// for GenICam cameras, "
            "or a local file path",
        )
    path = Path(text).expanduser()
    if path.is_dir():
        return "folder"
    if not path.exists() and _GLOB_CHARS.search(text):
        return "glob"
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return "image"
    return "video"


def natural_key(path: Path) -> list[object]:
    # frame_2.png before frame_10.png, as a person numbering files expects.
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _ffmpeg_backend() -> int:
    return cv2.CAP_FFMPEG if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY


def open_capture(target: str | int, *, open_timeout_s: float, read_timeout_s: float) -> cv2.VideoCapture | None:
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


def capture_fps(cap: cv2.VideoCapture) -> float | None:
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    return fps if math.isfinite(fps) and 0 < fps < 1000 else None


def read_frame(cap: cv2.VideoCapture) -> np.ndarray | None:
    try:
        ok, image = cap.read()
    except cv2.error as error:
        log.debug("OpenCV read failed: %s", error)
        return None
    if not ok or image is None or image.size == 0:
        return None
    return as_bgr(image)


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Frames are BGR uint8 (H, W, 3) whatever the decoder produced: the one normalisation
    (inspector/decode.py), as in training. A camera's usual BGR uint8 frame passes unchanged."""
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return image
    return to_bgr_uint8(image)


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
    # A triggered camera's frames are each a part's: never dropped to keep only the freshest.
    keeps_every_frame: bool = False
    problem: str | None = None  # why a live source is not delivering right now, in words

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

"""Frame sources: video files, image folders/globs, cameras, RTSP/HTTP streams, GenICam cameras.

``open_source`` classifies a URI, validates it before any work starts (a missing or
corrupt file is a ``SourceError`` naming the fix, never an OpenCV traceback) and returns
a ``FrameSource``: an iterable of ``Frame`` and a context manager.

Files yield every frame (index = frame number in the file), optionally paced at the
recorded fps. Live sources (camera, RTSP/HTTP) run a background reader that keeps only
the freshest frame, so a slow consumer inspects what the line looks like *now*, and
reconnect with exponential backoff when the stream fails or ends. GenICam cameras
(``pylon://SERIAL``, ``genicam://PRODUCER.cti?serial=…``; inspector/sources/genicam/) take their
settings and trigger mode from ``camera`` (``source.camera`` in a station config).
"""

from __future__ import annotations

import logging
from pathlib import Path

from inspector.camera_config import CameraConfig
from inspector.config import ReconnectConfig
from inspector.errors import SourceError
from inspector.sources.base import FrameSource, SourceStats, redact_uri, source_kind
from inspector.sources.files import ImageFilesSource, VideoFileSource, folder_source, glob_source
from inspector.sources.live import LiveSource

log = logging.getLogger(__name__)

__all__ = [
    "FrameSource",
    "ImageFilesSource",
    "LiveSource",
    "SourceStats",
    "VideoFileSource",
    "open_source",
    "redact_uri",
    "source_kind",
]


def open_source(
    uri: str | int | Path,
    *,
    pace: bool = False,
    loop: bool = False,
    reconnect: ReconnectConfig | None = None,
    wait_for_first: bool = False,
    camera: CameraConfig | None = None,
) -> FrameSource:
    """Open a camera index, rtsp(s)/http(s) URL, image folder, glob, image or video file.

    Raises ``SourceError`` before any work starts when the source is missing, corrupt or
    empty. ``pace``/``loop`` apply to files; ``reconnect`` and ``wait_for_first`` to live
    sources (``wait_for_first=True``: start even when the camera is down and keep retrying);
    ``camera`` (settings, trigger mode) to GenICam cameras.
    """
    kind = source_kind(uri)
    if kind == "genicam":
        from inspector.sources.genicam import open_camera  # the SDKs load only for a camera URI

        return open_camera(str(uri), camera, reconnect=reconnect, wait_for_first=wait_for_first)
    if camera is not None and camera != CameraConfig():
        raise SourceError(
            f"source.camera applies to pylon:// and genicam:// cameras; {redact_uri(str(uri))!r} is a {kind}",
            "remove the camera section, or use a GenICam camera URI",
        )
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
        return folder_source(path, loop)
    if kind == "glob":
        return glob_source(str(uri), loop)
    if kind == "image":
        if not path.is_file():
            raise SourceError(f"image file {path} does not exist", "pass an existing image, folder, glob or video")
        return ImageFilesSource([path], str(uri), loop=loop)
    return VideoFileSource(uri if isinstance(uri, Path) else str(uri), pace=pace, loop=loop)

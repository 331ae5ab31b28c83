"""The live page's state (fed by the publisher), its WSGI app and its HTTP server."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from edge.web.access import is_local, token_ok
from edge.wsgi import BackgroundWSGIServer
from inspector.explanations import shorten, words_label
from inspector.frames import Frame
from inspector.payloads.verdict import FrameVerdict
from inspector.render import draw_verdict, encode_jpeg, thumbnail

log = logging.getLogger(__name__)

RECENT_NG = 8
_STATIC = {"live.js": "text/javascript", "live.css": "text/css", "index.html": "text/html"}
StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class _NgPart:
    id: str
    at: str
    part_id: str | None
    confidence: float
    classes: list[str]
    explanation: str | None
    words_label: str | None  # a random or demo model's words say what they are worth
    evidence: str | None
    jpeg: bytes

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "jpeg"}


class LiveState:
    """What the page shows for one station: counts, the current frame and verdict, the last NG parts.

    ``observe`` runs on the publisher thread for every verdict; pictures are encoded lazily
    (the current frame only when a page asks for it), NG thumbnails once, when they happen.
    """

    def __init__(self, station: str, *, model_warning: str | None = None) -> None:
        self.station = station
        self.model_warning = model_warning  # random or demo model (inspector.runtime): shown as a banner
        self._lock = threading.Lock()
        self.counts = {"OK": 0, "NG": 0, "UNCERTAIN": 0}
        self._current: tuple[Frame | None, FrameVerdict] | None = None
        self._current_jpeg: tuple[str, bytes] | None = None
        self._recent: deque[_NgPart] = deque(maxlen=RECENT_NG)

    def observe(self, frame: Frame | None, verdict: FrameVerdict) -> None:
        ng = None
        if verdict.verdict == "NG" and frame is not None:
            said = [d for d in verdict.defects if (d.explanation or "").strip()]
            explanation = shorten(max(said, key=lambda d: d.confidence).explanation or "") if said else None
            ng = _NgPart(
                id=verdict.message_id,
                at=verdict.source.captured_at.isoformat(),
                part_id=verdict.source.part_id,
                confidence=verdict.confidence,
                classes=list(dict.fromkeys(d.class_name for d in verdict.defects)),
                explanation=explanation,
                words_label=words_label(verdict.model.model_dump()) if explanation else None,
                evidence=verdict.evidence,
                jpeg=encode_jpeg(thumbnail(draw_verdict(frame.image, verdict), 240), 80),
            )
        with self._lock:
            self.counts[verdict.verdict] = self.counts.get(verdict.verdict, 0) + 1
            if frame is not None:
                self._current = (frame, verdict)
            if ng is not None:
                self._recent.appendleft(ng)

    def snapshot(self, paused: bool) -> dict[str, Any]:
        with self._lock:
            counts = dict(self.counts)
            current = self._current
            recent = [part.summary() for part in self._recent]
        total = sum(counts.values())
        verdict = current[1] if current else None
        return {
            "station": self.station,
            "paused": paused,
            "model_warning": self.model_warning,
            "counts": counts,
            "total": total,
            "yield": round(counts["OK"] / total, 4) if total else None,
            "current": None
            if verdict is None
            else {
                "id": verdict.message_id,
                "verdict": verdict.verdict,
                "confidence": verdict.confidence,
                "part_id": verdict.source.part_id,
                "at": verdict.source.captured_at.isoformat(),
                "error": verdict.error,
                "words_label": words_label(verdict.model.model_dump()),
                "defects": [
                    {"class": d.class_name, "confidence": d.confidence, "bbox": d.bbox, "explanation": d.explanation}
                    for d in verdict.defects
                ],
            },
            "recent_ng": recent,
        }

    def current_jpeg(self) -> bytes | None:
        with self._lock:
            current = self._current
            cached = self._current_jpeg
        if current is None or current[0] is None:
            return None
        frame, verdict = current
        if cached is not None and cached[0] == verdict.message_id:
            return cached[1]
        jpeg = encode_jpeg(thumbnail(draw_verdict(frame.image, verdict), 960), 85)
        with self._lock:
            self._current_jpeg = (verdict.message_id, jpeg)
        return jpeg

    def ng_jpeg(self, message_id: str) -> bytes | None:
        with self._lock:
            return next((part.jpeg for part in self._recent if part.id == message_id), None)


@dataclass(frozen=True)
class LiveStation:
    """One station on the page: its state and the buttons' actions."""

    state: LiveState
    pause: Callable[[], Any]
    resume: Callable[[], Any]
    paused: Callable[[], bool]


class LivePage:
    """The WSGI app: ``/`` the page, ``/api/stations``, ``/api/state``, ``/api/frame.jpg``,
    ``/api/ng/<id>.jpg``, ``POST /api/pause`` and ``/api/resume`` (``?station=<name>`` picks one)."""

    def __init__(self, stations: Mapping[str, LiveStation], token: str | None) -> None:
        if not stations:
            raise ValueError("the live page needs at least one station")
        self.stations = dict(stations)
        self._token = token

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "GET" and (path == "/" or path.removeprefix("/static/") in _STATIC):
            return self._static("index.html" if path == "/" else path.removeprefix("/static/"), start_response)
        if not path.startswith("/api/"):
            return _respond(start_response, "404 Not Found", {"error": "not found: open / for the live page"})
        authorised = token_ok(self._token, environ)
        if method == "POST":
            if self._token is None:
                return _respond(start_response, "403 Forbidden", {
                    "error": "the buttons are off: no token is set (edge.live_token_env or edge.live_token_file)"
                })  # fmt: skip
            if not authorised:
                return _respond(start_response, "401 Unauthorized", {"error": "a valid token is needed to press this"})
        elif not (authorised or is_local(environ)):
            return _respond(start_response, "401 Unauthorized", {
                "error": "from another machine the live page needs the token: open it as http://HOST:PORT/#token=..."
            })  # fmt: skip
        name = parse_qs(environ.get("QUERY_STRING", "")).get("station", [next(iter(self.stations))])[0]
        station = self.stations.get(name)
        if station is None:
            return _respond(start_response, "404 Not Found", {"error": "no such station; see /api/stations"})
        return self._api(method, path, station, start_response)

    def _api(self, method: str, path: str, station: LiveStation, start_response: StartResponse) -> Iterable[bytes]:
        if method == "POST" and path in ("/api/pause", "/api/resume"):
            (station.pause if path == "/api/pause" else station.resume)()
            log.info("live page: %s (%s)", path.removeprefix("/api/"), station.state.station)
            return _respond(start_response, "200 OK", {"paused": station.paused()})
        if method != "GET" or path in ("/api/pause", "/api/resume"):
            return _respond(start_response, "405 Method Not Allowed", {"error": "use GET (or POST for the buttons)"})
        if path == "/api/stations":
            return _respond(start_response, "200 OK", {"stations": list(self.stations)})
        if path == "/api/state":
            return _respond(start_response, "200 OK", station.state.snapshot(station.paused()))
        if path == "/api/frame.jpg":
            return _jpeg(start_response, station.state.current_jpeg())
        if path.startswith("/api/ng/") and path.endswith(".jpg"):
            return _jpeg(start_response, station.state.ng_jpeg(path[len("/api/ng/") : -len(".jpg")]))
        return _respond(start_response, "404 Not Found", {"error": "not found"})

    @staticmethod
    def _static(name: str, start_response: StartResponse) -> Iterable[bytes]:
        body = resources.files("edge.web").joinpath("static", name).read_bytes()
        start_response("200 OK", [
            ("Content-Type", f"{_STATIC[name]}; charset=utf-8"), ("Cache-Control", "no-store"),
            ("Content-Security-Policy", "default-src 'self'; img-src 'self' blob:"),
            ("X-Frame-Options", "DENY"),
        ])  # fmt: skip
        return [body]


def _respond(start_response: StartResponse, status: str, body: Mapping[str, Any]) -> Iterable[bytes]:
    start_response(status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
    return [json.dumps(body, default=str).encode("utf-8")]


def _jpeg(start_response: StartResponse, data: bytes | None) -> Iterable[bytes]:
    if data is None:
        return _respond(start_response, "404 Not Found", {"error": "no picture yet"})
    start_response("200 OK", [("Content-Type", "image/jpeg"), ("Cache-Control", "no-store")])
    return [data]


class LiveServer(BackgroundWSGIServer):
    """Serves a ``LivePage`` on ``host:port`` (port 0: any free one) in a daemon thread."""

    def __init__(self, host: str, port: int, page: LivePage) -> None:
        super().__init__(host, port, page, thread_name="live-page", logger=log, log_prefix="live page: ")
        self.url = f"http://{host}:{self.port}/"
        log.info("live page on %s", self.url)

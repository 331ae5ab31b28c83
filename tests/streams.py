"""Test helpers shared by the source and edge tests: an IP-camera stand-in and a polling wait."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np


def poll(predicate: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    """Poll a condition with a generous deadline (a hang guard, not a timing assertion); returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    return predicate()


class MjpegCamera:
    """An IP camera on 127.0.0.1: multipart/x-mixed-replace JPEG frames of one image, stoppable and restartable.

    ``image`` is BGR uint8; ``period_s`` the time between frames.
    """

    def __init__(self, image: np.ndarray, *, port: int = 0, period_s: float = 0.02) -> None:
        self.stop_event = threading.Event()
        stop = self.stop_event
        jpeg = cv2.imencode(".jpg", image)[1].tobytes()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                try:
                    while not stop.wait(period_s):
                        self.wfile.write(part + jpeg + b"\r\n")
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/video.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()


def noise_camera(seed: int, *, period_s: float = 0.05) -> Iterator[MjpegCamera]:
    """A camera fixture's body: a 256x192 random image (``seed``) served as MJPEG, stopped after the test."""
    image = np.random.default_rng(seed).integers(0, 255, (192, 256, 3), dtype=np.uint8)
    camera = MjpegCamera(image, period_s=period_s)
    yield camera
    camera.stop()

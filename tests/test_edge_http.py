"""The service's HTTP surface as a stranger on the network would meet it: what is bound where,
what ``/healthz`` tells without the token, how many connections it takes, and proxies."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edge.metrics import HealthServer
from edge.web.access import is_local
from edge.wsgi import BackgroundWSGIServer

REPO = Path(__file__).resolve().parents[1]
TOKEN = "a-long-enough-token-0123456789"
FULL = {"state": "degraded", "reason": "source failed", "source": {"id": "rtsp://cam-7/stream"}, "rss_bytes": 1}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.parametrize("path", ["edge/deploy/line-inspector.service", "edge/deploy/Dockerfile"])
def test_the_shipped_deploy_files_bind_the_metrics_to_loopback(path: str) -> None:
    text = (REPO / path).read_text()
    assert "0.0.0.0" not in re.sub(r"#.*", "", text)  # comments may explain how to open it up
    assert re.search(r"--metrics-host[\s\",]+127\.0\.0\.1", text), "the bind address is stated, not left implicit"


def test_healthz_says_only_ok_and_state_without_the_token() -> None:
    server = HealthServer("127.0.0.1", 0, CollectorRegistry(), lambda: (False, dict(FULL)), TOKEN)
    try:
        url = f"http://127.0.0.1:{server.port}/healthz"
        status, body = get(url)
        assert status == 503 and json.loads(body) == {"ok": False, "state": "degraded"}
        for wrong in ("Bearer nope-nope-nope-nope", f"Bearer {TOKEN[:-1]}", TOKEN):
            assert json.loads(get(url, {"Authorization": wrong})[1]) == {"ok": False, "state": "degraded"}
        status, body = get(url, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 503 and json.loads(body) == FULL
    finally:
        server.close()


def test_healthz_of_several_stations_says_each_state_only() -> None:
    body = {"stations": {"a": {**FULL, "state": "online"}, "b": FULL}}
    server = HealthServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, body))  # no token set: never more
    try:
        assert json.loads(get(f"http://127.0.0.1:{server.port}/healthz")[1]) == {
            "ok": True, "state": {"a": "online", "b": "degraded"}
        }  # fmt: skip
    finally:
        server.close()


def test_connections_are_bounded_and_an_extra_one_is_told_so_at_once() -> None:
    def app(environ: dict, start_response) -> list[bytes]:  # type: ignore[no-untyped-def]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    import logging

    server = BackgroundWSGIServer("127.0.0.1", 0, app, thread_name="t", logger=logging.getLogger("t"),
                                  log_prefix="", max_connections=2)  # fmt: skip
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(2)]
    try:
        for held in idle:  # each holds a slot: connected, request unfinished
            held.sendall(b"GET / HTTP/1.0\r\n")
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        extra.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = extra.recv(200)
        extra.close()
        assert answer.startswith(b"HTTP/1.0 503") and b"too many connections" in answer
    finally:
        for held in idle:
            held.close()
    # The slots come back: requests are served again.
    status = None
    for _ in range(50):  # the handler threads notice the closed sockets; each try is a real request
        status, _body = get(f"http://127.0.0.1:{server.port}/")
        if status == 200:
            break
    server.close()
    assert status == 200


@pytest.mark.parametrize("header", ["HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP"])
def test_a_request_relayed_by_a_proxy_on_the_box_is_not_local(header: str) -> None:
    local = {"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:9109"}
    assert is_local(local)
    assert not is_local({**local, header: "203.0.113.7"})

"""Health building blocks: state derivation, percentiles, sd_notify on a real socket, /metrics and /healthz."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.health import (
    Condition,
    FrameCounts,
    HealthMessage,
    Latency,
    LatencyWindow,
    RateMeter,
    SourceHealth,
    derive_state,
    rss_bytes,
)
from edge.metrics import EdgeMetrics, HealthServer
from edge.sdnotify import SystemdNotifier, watchdog_interval_s


@pytest.mark.parametrize(
    ("condition", "state", "words"),
    [
        (Condition(workers_alive=True, source_healthy=True, paused=False), "online", None),
        (Condition(workers_alive=True, source_healthy=False, paused=False), "degraded", "reconnecting"),
        (Condition(True, False, False, source_problem="source failed: boom"), "degraded", "boom"),
        (Condition(workers_alive=True, source_healthy=True, paused=True), "degraded", "paused"),
        (Condition(workers_alive=False, source_healthy=True, paused=False), "degraded", "worker"),
        (Condition(workers_alive=True, source_healthy=True, paused=False, stalled_s=90.0), "degraded", "stalled"),
        (Condition(workers_alive=True, source_healthy=True, paused=False, stopping=True), "offline", "shutting down"),
    ],
)
def test_state_is_derived_from_the_condition(condition: Condition, state: str, words: str | None) -> None:
    got, reason = derive_state(condition)
    assert got == state
    assert (reason is None) if words is None else (words in (reason or ""))


def test_latency_percentiles_are_nearest_rank_over_a_bounded_window() -> None:
    window = LatencyWindow(size=100)
    assert window.percentiles(50, 95) == [None, None]
    for ms in range(1, 201):  # only the last 100 (101..200) are kept
        window.add(float(ms))
    assert window.percentiles(50, 95, 100) == [150.0, 195.0, 200.0]


def test_rate_meter() -> None:
    meter = RateMeter()
    assert meter.rate(0, now=10.0) == 0.0
    assert meter.rate(50, now=15.0) == 10.0
    assert meter.rate(50, now=15.0) == 0.0  # no time passed: no rate, no division by zero


def test_sd_notify_speaks_the_systemd_datagram_protocol(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        notifier = SystemdNotifier(str(path))
        assert notifier.enabled
        assert notifier.ready("loaded")
        assert server.recv(1024) == b"READY=1\nSTATUS=loaded"
        assert notifier.watchdog()
        assert server.recv(1024) == b"WATCHDOG=1"
        assert notifier.stopping()
        assert server.recv(1024) == b"STOPPING=1"
        notifier.close()


def test_sd_notify_is_a_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled and not notifier.ready() and not notifier.watchdog()


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval_s() is None


def _health(state: str = "online") -> HealthMessage:
    return HealthMessage(
        at=datetime.now(UTC),
        state=state,  # type: ignore[arg-type]
        paused=False,
        uptime_s=1.0,
        fps=2.5,
        latency=Latency(p50_ms=10.0, p95_ms=20.0),
        frames=FrameCounts(captured=7, inspected=6, errors=1, dropped=3, published=6),
        queues={"frames": 1, "verdicts": 0},
        outbox={"outbox_messages": 4},
        source=SourceHealth(id="cam", live=True, healthy=True, reconnects=2),
        rss_bytes=rss_bytes(),
    )


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_metrics_and_healthz_over_http() -> None:
    metrics = EdgeMetrics()
    serving = {"value": True}
    metrics.attach(_health, lambda: {"OK": 4, "NG": 2})
    metrics.observe_latency_ms(12.0)
    metrics.count_command("pause", ok=True)
    metrics.count_command(None, ok=False)
    server = HealthServer("127.0.0.1", 0, metrics.registry, lambda: (serving["value"], {"state": "online"}))
    try:
        base = f"http://127.0.0.1:{server.port}"
        status, body = _get(base + "/metrics")
        text = body.decode()
        assert status == 200
        for line in (
            "inspector_frames_inspected_total 6.0",
            "inspector_frames_dropped_total 3.0",
            "inspector_frame_errors_total 1.0",
            'inspector_verdicts_published_total{verdict="NG"} 2.0',
            'inspector_state{state="online"} 1.0',
            'inspector_queue_depth{queue="frames"} 1.0',
            "inspector_outbox_messages 4.0",
            "inspector_frame_latency_seconds_count 1.0",
            'inspector_commands_total{command="pause",outcome="ok"} 1.0',
            'inspector_commands_total{command="unknown",outcome="rejected"} 1.0',
        ):
            assert line in text, line
        assert "process_resident_memory_bytes" in text
        status, body = _get(base + "/healthz")
        assert status == 200 and json.loads(body) == {"ok": True, "state": "online"}
        serving["value"] = False
        assert _get(base + "/healthz")[0] == 503
        assert _get(base + "/nope")[0] == 404
    finally:
        server.close()

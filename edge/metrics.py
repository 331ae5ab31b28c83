"""Prometheus metrics and ``/healthz`` over HTTP (prometheus-client's WSGI app on wsgiref).

Counters and gauges are read from the service at scrape time (a custom collector over the
same ``HealthMessage`` the heartbeat publishes), so there is one source of truth and no
double bookkeeping; only the latency histogram is observed per frame. Each service owns
its registry: no global state, and two services in one test process do not collide.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from edge.health import HealthMessage
from edge.web.access import token_ok
from edge.wsgi import BackgroundWSGIServer

log = logging.getLogger(__name__)

# Frame latency buckets (seconds): a tiny CPU model is ~10 ms, a 4B model on a GPU 50-500 ms.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STATES = ("online", "degraded", "offline")


class _ServiceCollector(Collector):
    def __init__(self, health: Callable[[], HealthMessage], verdicts: Callable[[], dict[str, int]]) -> None:
        self._health = health
        self._verdicts = verdicts

    def collect(self) -> Iterable[Metric]:
        try:
            h = self._health()
        except Exception:  # noqa: BLE001 - a scrape must not crash on a half-started service
            log.debug("health snapshot failed during a scrape", exc_info=True)
            return []
        return list(self._families(h))

    def _families(self, h: HealthMessage) -> Iterator[Metric]:
        frames = h.frames
        for name, value, text in (
            ("frames_captured", frames.captured, "Frames taken from the source."),
            ("frames_inspected", frames.inspected, "Frames given a verdict, error verdicts included."),
            ("frame_errors", frames.errors, "Frames whose inspection failed (UNCERTAIN verdict with an error)."),
            ("frames_dropped", frames.dropped, "Frames never inspected (stale live frames, queue overflow)."),
            ("source_reconnects", h.source.reconnects, "Times the live source reconnected."),
            (
                "verdicts_failed",
                frames.failed,
                "Verdicts some sink refused after its retries.",
            ),
            ("verdicts_spilled", frames.spilled, "Failed verdicts kept in edge.spill_file."),
            ("verdicts_lost", frames.lost, "Verdicts neither delivered nor kept."),
        ):
            yield CounterMetricFamily(f"inspector_{name}", text, value=value)
        published = CounterMetricFamily(
            "inspector_verdicts_published", "Verdicts handed to the sinks.", labels=["verdict"]
        )
        for verdict, count in sorted(self._verdicts().items()):
            published.add_metric([verdict], count)
        yield published
        state = GaugeMetricFamily("inspector_state", "1 for the current station state.", labels=["state"])
        for name in _STATES:
            state.add_metric([name], 1.0 if h.state == name else 0.0)
        yield state
        yield GaugeMetricFamily("inspector_paused", "1 while paused by command.", value=float(h.paused))
        yield GaugeMetricFamily(
            "inspector_failing_streak", "Verdicts failed in a row (inspection or sinks).", value=frames.failing_streak
        )
        failures = CounterMetricFamily(
            "inspector_sink_failures", "Sink calls that raised, retries included.", labels=["sink"]
        )
        for sink, count in sorted(h.sink_failures.items()):
            failures.add_metric([sink], count)
        yield failures
        yield GaugeMetricFamily(
            "inspector_source_healthy", "1 while the source delivers.", value=float(h.source.healthy)
        )
        yield GaugeMetricFamily("inspector_fps", "Frames inspected per second (last heartbeat window).", value=h.fps)
        depth = GaugeMetricFamily("inspector_queue_depth", "Items waiting in each bounded queue.", labels=["queue"])
        for name, value in sorted(h.queues.items()):
            depth.add_metric([name], value)
        yield depth
        outbox = h.outbox.get("outbox_messages")
        if isinstance(outbox, int):
            yield GaugeMetricFamily("inspector_outbox_messages", "MQTT messages not yet acknowledged.", value=outbox)
        if h.gpu:
            gpu = GaugeMetricFamily("inspector_gpu_memory_bytes", "GPU memory of the model's device.", labels=["kind"])
            for kind, value in sorted(h.gpu.items()):
                gpu.add_metric([kind], value)
            yield gpu


class EdgeMetrics:
    """The service's registry: process figures, the per-frame latency histogram, command counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.latency = Histogram(
            "inspector_frame_latency_seconds",
            "Time to inspect one frame.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.commands = Counter(
            "inspector_commands",
            "Commands received, by command and outcome.",
            ["command", "outcome"],
            registry=self.registry,
        )

    def observe_latency_ms(self, ms: float) -> None:
        self.latency.observe(ms / 1000.0)

    def count_command(self, command: str | None, ok: bool) -> None:
        self.commands.labels(command or "unknown", "ok" if ok else "rejected").inc()

    def attach(self, health: Callable[[], HealthMessage], verdicts: Callable[[], dict[str, int]]) -> None:
        """Export the service's live figures (call once, when the service exists)."""
        self.registry.register(_ServiceCollector(health, verdicts))


def public_health(serving: bool, body: dict[str, Any]) -> dict[str, Any]:
    """What ``/healthz`` tells anyone: up or not, and the state (per station in a multi-station process)."""
    if "stations" in body:
        return {"ok": serving, "state": {name: station.get("state") for name, station in body["stations"].items()}}
    return {"ok": serving, "state": body.get("state")}


class HealthServer(BackgroundWSGIServer):
    """``GET /metrics`` (Prometheus text) and ``GET /healthz`` (JSON; 200 while serving, else 503).

    ``/healthz`` says only ``ok`` and ``state`` unless the request carries the token
    (``Authorization: Bearer``, the live page's): the whole health message names the source,
    the outbox's last error and the box's memory, which a port scan should not read.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        healthz: Callable[[], tuple[bool, dict[str, Any]]],
        token: str | None = None,
    ) -> None:
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            path = environ.get("PATH_INFO", "")
            if path in ("/healthz", "/healthz/"):
                serving, body = healthz()
                if not token_ok(token, environ):
                    body = public_health(serving, body)
                start_response(
                    "200 OK" if serving else "503 Service Unavailable",
                    [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
                )
                return [json.dumps(body, default=str).encode("utf-8")]
            if path in ("/metrics", "/"):
                return metrics_app(environ, start_response)
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics or /healthz\n"]

        super().__init__(host, port, app, thread_name="http", logger=log, log_prefix="http: ")
        log.info("metrics on http://%s:%d/metrics, health on /healthz", host, self.port)

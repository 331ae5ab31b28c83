"""The service's two HTTP servers: ``/metrics`` + ``/healthz`` (edge/metrics.py) and the live page (edge/web)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge.web import LivePage, LiveServer, LiveStation
from edge.web.access import load_token
from inspector.config import EdgeConfig
from inspector.errors import InspectorError

log = logging.getLogger(__name__)


def serve_health(settings: EdgeConfig, registry: Any, healthz: Callable[[], Any]) -> Any:
    """The /metrics and /healthz server on ``edge.metrics_host:metrics_port``; a port in use is an InspectorError."""
    from edge.metrics import HealthServer

    token = load_token(settings.live_token_env, settings.live_token_file)  # the full /healthz needs it
    try:
        return HealthServer(settings.metrics_host, settings.metrics_port, registry, healthz, token)
    except OSError as error:
        raise InspectorError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {error.strerror or error}",
            "pick a free port with --metrics-port (0 turns the HTTP server off)",
        ) from None


def start_live_page(settings: EdgeConfig, stations: dict[str, LiveStation]) -> LiveServer | None:
    """Serve the live page (edge/web) unless ``live_port`` is 0. A port that is taken is logged, not fatal:
    the page is a view, and the line must run without it. A token file that cannot be read is fatal."""
    if not settings.live_port:
        return None
    token = load_token(settings.live_token_env, settings.live_token_file)
    if token is None:
        log.info("live page: no token set (%s): read-only, and only from this machine",
                 f"${settings.live_token_env}" if settings.live_token_env else "edge.live_token_file")  # fmt: skip
    elif settings.live_host in ("127.0.0.1", "localhost", "::1"):
        log.info("live page: bound to %s; set edge.live_host to reach it from elsewhere", settings.live_host)
    try:
        return LiveServer(settings.live_host, settings.live_port, LivePage(stations, token))
    except OSError as error:
        log.error(
            "live page not served: cannot bind %s:%d (%s); pick another edge.live_port (0: off)",
            settings.live_host, settings.live_port, error.strerror or error,
        )  # fmt: skip
        return None

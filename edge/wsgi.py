"""A WSGI app served from a daemon thread: what ``/metrics`` (metrics.py) and the live page (web/live.py) run on."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


def _quiet_handler(logger: logging.Logger, prefix: str) -> type[WSGIRequestHandler]:
    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            logger.debug(prefix + format, *args)  # request lines at debug, not on stderr

    return QuietHandler


class BackgroundWSGIServer:
    """Serves ``app`` on ``host:port`` (port 0: any free one, then in ``port``) in a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        app: Callable[..., Any],
        *,
        thread_name: str,
        logger: logging.Logger,
        log_prefix: str,
    ) -> None:
        self._server = make_server(
            host, port, app, _ThreadingWSGIServer, handler_class=_quiet_handler(logger, log_prefix)
        )
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=thread_name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

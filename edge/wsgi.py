"""A WSGI app served from a daemon thread: what ``/metrics`` (metrics.py) and the live page (web/live.py) run on."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

# A thread per connection, at most this many at once (a scraper and a few browsers need far fewer).
MAX_CONNECTIONS = 32
# An idle or trickling connection gives its slot back after this long.
CONNECTION_TIMEOUT_S = 10.0
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 28\r\n\r\n"
    b"busy: too many connections\r\n"
)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, bounded: one more than ``max_connections`` is answered 503 at once."""

    daemon_threads = True
    allow_reuse_address = True
    max_connections = MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # the thread did not start
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _quiet_handler(logger: logging.Logger, prefix: str) -> type[WSGIRequestHandler]:
    class QuietHandler(WSGIRequestHandler):
        timeout = CONNECTION_TIMEOUT_S

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
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        server_class = type("BoundedWSGIServer", (_ThreadingWSGIServer,), {"max_connections": max_connections})
        self._server = make_server(host, port, app, server_class, handler_class=_quiet_handler(logger, log_prefix))
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=thread_name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""Who may read the live page and who may press its buttons."""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inspector.errors import ConfigError

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
# Set by a reverse proxy: behind one, every client's connection comes from loopback.
PROXY_HEADERS = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP")


def load_token(env_name: str | None, file: Path | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The live page's token from ``live_token_file`` (wins) or the environment; None: no token set."""
    if file is not None:
        try:
            token = file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(
                f"edge.live_token_file {file} cannot be read: {error.strerror or error}",
                "point it at a readable file holding the token, or unset it",
            ) from None
        if len(token) < 16:
            raise ConfigError(f"edge.live_token_file {file}: the token must be at least 16 characters")
        return token
    token = (environ.get(env_name) or "").strip() if env_name else ""
    if token and len(token) < 16:
        raise ConfigError(f"${env_name}: the live page token must be at least 16 characters")
    return token or None


def is_local(environ: Mapping[str, Any]) -> bool:
    """A request from this box, to a loopback host name (a DNS-rebinding page gets no free pass), not
    relayed by a proxy (a proxy on the box makes every client look local: then the token is needed)."""
    if any(name in environ for name in PROXY_HEADERS):
        return False
    try:
        loopback = ipaddress.ip_address(environ.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False
    host = str(environ.get("HTTP_HOST", "")).lower()
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return loopback and name in _LOOPBACK_HOSTS


def presented_token(environ: Mapping[str, Any]) -> str | None:
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def token_ok(expected: str | None, environ: Mapping[str, Any]) -> bool:
    given = presented_token(environ)
    return expected is not None and given is not None and hmac.compare_digest(given.encode(), expected.encode())

"""The live page: what the people beside the line look at (plain HTML + JS, no build step).

``LivePage`` is a small WSGI app on its own port (``edge.live_host`` / ``edge.live_port``,
localhost by default) beside ``/metrics``. It shows, per station, the current frame with its
boxes, the OK / NG / UNCERTAIN counts and the yield, the last NG parts with thumbnails and
explanations, and pause / resume buttons. The page polls ``api/state`` twice a second and
fetches a picture only when a new verdict has arrived.

Access (see ``access.py``): from this box (loopback, with a loopback ``Host``), reading needs no
token; from elsewhere every data request needs the token; the buttons always need it. The
token travels in an ``Authorization: Bearer`` header (the page takes it from ``#token=...`` in
its URL), never in a cookie, so another web page cannot press the buttons for you.
"""

from __future__ import annotations

from edge.web.live import LivePage, LiveServer, LiveState, LiveStation

__all__ = ["LivePage", "LiveServer", "LiveState", "LiveStation"]

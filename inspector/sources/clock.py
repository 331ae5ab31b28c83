"""When a frame was *taken*, from the stream's own timestamps rather than the time it was decoded.

A network stream buffers: after a stall, frames taken over the last second arrive in a burst
and decode within milliseconds, so the decode time says they were all taken *now*. The
stream's presentation times (RTSP/video PTS, a camera's exposure timestamp) keep their true
spacing but count from an unknown origin. ``StreamClock`` maps them onto the wall clock with
the least delay seen: ``origin = min(arrived - pts)`` over a sliding window. The frame that
arrived with the least delay fixes the origin; frames delayed in a buffer are dated back to
when they were taken. What is left is that least delay itself (network and decode of the
fastest frame, milliseconds), which ``source.trigger_delay_s`` can absorb. The window lets
the origin follow a clock that drifts (a camera's oscillator against the host's).
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

# Frames over which the least delay is looked for (~8 s at 30 fps): long enough to include a
# frame that came through without buffering, short enough to follow clock drift.
WINDOW = 256


class StreamClock:
    """Stream timestamps (seconds, any origin) -> UTC capture times; reset on a discontinuity."""

    def __init__(self, window: int = WINDOW) -> None:
        self._offsets: deque[float] = deque(maxlen=window)  # arrived (epoch s) - pts (s)
        self._last_pts: float | None = None

    def reset(self) -> None:
        """Forget the origin (the stream was reopened, a file looped)."""
        self._offsets.clear()
        self._last_pts = None

    def stamp(self, pts_s: float | None, arrived: datetime) -> datetime:
        """The capture time of a frame with stream time ``pts_s`` that arrived at ``arrived``.

        Without a usable timestamp (None, negative, not increasing: a file that looped, a stream
        that restarted) the clock starts again from this frame. Never later than ``arrived``.
        """
        if pts_s is None or pts_s < 0:
            self.reset()
            return arrived
        if self._last_pts is not None and pts_s <= self._last_pts:
            self.reset()
        self._last_pts = pts_s
        self._offsets.append(arrived.timestamp() - pts_s)
        origin = min(self._offsets)
        taken = arrived + timedelta(seconds=origin + pts_s - arrived.timestamp())
        return min(taken, arrived)

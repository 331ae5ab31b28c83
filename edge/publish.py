"""The publish worker: verdict queue -> every sink.

It never drops a verdict, so inference waits when the verdict queue is full (and a live
source drops frames instead). On stop it drains what is queued.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from edge.inference import Outgoing
from edge.queues import POLL_S, BoundedQueue
from inspector.frames import Frame
from inspector.payloads.verdict import FrameVerdict
from inspector.sinks.base import Sink

log = logging.getLogger(__name__)


class PublishWorker(threading.Thread):
    """Verdict queue -> every sink. A failing sink is logged and counted; the others still get it.

    ``observe`` (the live page) sees each verdict, with its frame, after the sinks have it.
    """

    def __init__(
        self,
        verdicts: BoundedQueue[Outgoing],
        sinks: Sequence[Sink],
        *,
        observe: Callable[[Frame | None, FrameVerdict], None] | None = None,
    ) -> None:
        super().__init__(name="publish", daemon=True)
        self._verdicts = verdicts
        self._sinks = list(sinks)
        self._observe = observe
        self._stop_event = threading.Event()
        self.published = 0
        self.failures = 0
        self.by_verdict: dict[str, int] = {"OK": 0, "NG": 0, "UNCERTAIN": 0}

    def stop(self) -> None:
        """Publish what is queued, then exit."""
        self._stop_event.set()

    def run(self) -> None:
        while True:
            item = self._verdicts.get(POLL_S)
            if item is None:
                if self._stop_event.is_set():
                    return
                continue
            verdict = item.verdict
            for sink in self._sinks:
                try:
                    sink.publish(verdict)
                except Exception as error:  # noqa: BLE001 - one sink's trouble must not starve the others
                    self.failures += 1
                    log.error("%s could not take verdict %s: %s", type(sink).__name__, verdict.message_id, error)
            self.published += 1
            self.by_verdict[verdict.verdict] = self.by_verdict.get(verdict.verdict, 0) + 1
            if self._observe is not None:
                try:
                    self._observe(item.frame, verdict)
                except Exception:  # noqa: BLE001 - the page is a view, never a reason to stop publishing
                    log.exception("the live page could not take verdict %s", verdict.message_id)

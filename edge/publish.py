"""The publish worker: verdict queue -> every sink.

It never drops a verdict, so inference waits when the verdict queue is full (and a live
source drops frames instead). On stop it drains what is queued.

A sink that raises (the outbox's disk is full) is tried again ``retries`` times; a verdict
some sink still refuses is *failed*, not published, and is kept: appended to the spill file
(JSON lines, the JSONL sink's format, so ``inspector`` tools read it). Only when that write
fails too is the verdict *lost*. Each count is in the health message and on ``/metrics``;
``consecutive_failed`` is what the supervisor degrades on and, past a bound, exits on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from edge.inference import Outgoing
from edge.queues import POLL_S, BoundedQueue
from inspector.frames import Frame
from inspector.payloads.verdict import FrameVerdict
from inspector.sinks.base import Sink

log = logging.getLogger(__name__)


class PublishWorker(threading.Thread):
    """Verdict queue -> every sink. A failing sink is retried, then the verdict is spilled and counted failed;
    the other sinks still get it.

    ``observe`` (the live page) sees each verdict, with its frame, after the sinks have it.
    """

    def __init__(
        self,
        verdicts: BoundedQueue[Outgoing],
        sinks: Sequence[Sink],
        *,
        observe: Callable[[Frame | None, FrameVerdict], None] | None = None,
        spill: Path | None = None,
        retries: int = 2,
        retry_delay_s: float = 0.05,
    ) -> None:
        super().__init__(name="publish", daemon=True)
        self._verdicts = verdicts
        self._sinks = list(sinks)
        self._observe = observe
        self._spill = spill
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._stop_event = threading.Event()
        self.published = 0  # every sink took the verdict
        self.failed = 0  # some sink refused it after the retries
        self.spilled = 0  # failed verdicts kept in the spill file
        self.lost = 0  # failed verdicts the spill file could not keep either
        self.failures = 0  # sink calls that raised, retries included
        self.sink_failures: dict[str, int] = {}
        self.consecutive_failed = 0  # failed verdicts in a row (0 after one every sink took)
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
            refused = [type(sink).__name__ for sink in self._sinks if not self._hand_over(sink, verdict)]
            if refused:
                self.failed += 1
                self.consecutive_failed += 1
                self._keep(verdict, refused)
            else:
                self.published += 1
                self.consecutive_failed = 0
                self.by_verdict[verdict.verdict] = self.by_verdict.get(verdict.verdict, 0) + 1
            if self._observe is not None:
                try:
                    self._observe(item.frame, verdict)
                except Exception:  # noqa: BLE001 - the page is a view, never a reason to stop publishing
                    log.exception("the live page could not take verdict %s", verdict.message_id)

    def _hand_over(self, sink: Sink, verdict: FrameVerdict) -> bool:
        name = type(sink).__name__
        for attempt in range(self._retries + 1):
            try:
                sink.publish(verdict)
                return True
            except Exception as error:  # noqa: BLE001 - one sink's trouble must not starve the others
                self.failures += 1
                self.sink_failures[name] = self.sink_failures.get(name, 0) + 1
                if attempt == self._retries:
                    log.error("%s could not take verdict %s: %s", name, verdict.message_id, error)
                    return False
                self._stop_event.wait(self._retry_delay_s * (attempt + 1))  # a full disk may drain a little
        return False

    def _keep(self, verdict: FrameVerdict, refused: list[str]) -> None:
        """Append the verdict to the spill file; counted lost when there is none or it cannot be written."""
        if self._spill is not None:
            try:
                self._spill.parent.mkdir(parents=True, exist_ok=True)
                with self._spill.open("a", encoding="utf-8") as handle:
                    handle.write(verdict.to_json() + "\n")
                self.spilled += 1
                log.warning(
                    "verdict %s kept in %s (%s refused it)", verdict.message_id, self._spill, ", ".join(refused)
                )
                return
            except OSError as error:
                log.error("verdict %s is lost: the spill file %s cannot take it either: %s",
                          verdict.message_id, self._spill, error)  # fmt: skip
        else:
            log.error(
                "verdict %s is lost: %s refused it and no spill file is set", verdict.message_id, ", ".join(refused)
            )
        self.lost += 1

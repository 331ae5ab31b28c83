"""Evidence pictures off the inference thread: a bounded queue and one writer thread.

Drawing the boxes, encoding the JPEG and writing it take milliseconds to tens of
milliseconds for a 5 MP frame; on the inference thread they would delay every verdict after
an NG. ``attach`` only names the file (the verdict carries the path at once) and queues the
work; the writer draws, encodes, writes and publishes the last NG picture. When the queue is
full (a slow disk, a burst of NG parts) the picture is dropped and counted, the verdict goes
on without a path: inference never waits for evidence.
"""

from __future__ import annotations

import logging
import queue
import threading

from edge.evidence import EvidenceStore
from inspector.frames import Frame
from inspector.payloads.verdict import FrameVerdict

log = logging.getLogger(__name__)


class EvidenceWriter(threading.Thread):
    """``EvidenceStore`` behind a bounded queue; ``dropped`` counts the pictures a full queue refused."""

    def __init__(self, store: EvidenceStore, *, queue_size: int = 8) -> None:
        super().__init__(name="evidence", daemon=True)
        self.store = store
        self._jobs: queue.Queue[tuple[Frame, FrameVerdict] | None] = queue.Queue(queue_size)
        self.dropped = 0

    # The store's counters, for /metrics.
    @property
    def saved(self) -> int:
        return self.store.saved

    @property
    def removed(self) -> int:
        return self.store.removed

    @property
    def failures(self) -> int:
        return self.store.failures

    def attach(self, frame: Frame, verdict: FrameVerdict) -> FrameVerdict:
        """The verdict with the path its picture will have (NG / UNCERTAIN), the picture queued; never blocks."""
        if not self.store.wanted(verdict):
            return verdict
        path = self.store.path_for(frame, verdict)
        with_path = verdict.model_copy(update={"evidence": str(path)})
        try:
            self._jobs.put_nowait((frame, with_path))
        except queue.Full:
            self.dropped += 1
            log.warning("evidence for frame %d dropped: the writer is behind (%d waiting)", frame.index,
                        self._jobs.maxsize)  # fmt: skip
            return verdict
        return with_path

    def run(self) -> None:
        while (job := self._jobs.get()) is not None:
            frame, verdict = job
            try:
                self.store.write(frame, verdict, self.store.path_for(frame, verdict))
            except Exception:  # noqa: BLE001 - a drawing bug must not end the pictures of the next parts
                self.store.failures += 1
                log.exception("evidence for frame %d failed", frame.index)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (within ``timeout_s``), then stop."""
        if not self.is_alive():
            return
        try:
            self._jobs.put(None, timeout=timeout_s)
        except queue.Full:
            log.warning("evidence writer still busy at shutdown; %d picture(s) not written", self._jobs.qsize())
            return
        self.join(timeout_s)

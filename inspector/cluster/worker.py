"""The body of one Ray actor: an ``Inspector`` (one model) that judges frame ranges of file sources.

A plain class: the driver wraps it with ``ray.remote`` (resources, restarts) at run time, so
it stays importable and testable without Ray. Frames are decoded where the model is, so
only verdicts (a few kB each) cross the network, never frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from inspector.cluster.reader import RangeReader, RangeStats
from inspector.config import StationFile
from inspector.errors import InspectorError
from inspector.frames import Frame
from inspector.model_warning import random_weights_warning
from inspector.payloads.verdict import FrameVerdict
from inspector.runtime import ErrorPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceProbe:
    """What a worker found when it opened a source: its id and frame count, or why it cannot be read."""

    uri: str
    source_id: str | None = None
    frame_count: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class WorkerReady:
    """A worker's answer once its model is loaded: the problem and its fix, or the model's warning."""

    problem: str | None = None
    hint: str | None = None
    warning: str | None = None  # random or demo weights: said once, by the driver


@dataclass
class ChunkResult:
    """The verdicts of one frame range, in frame order, and what reading it met."""

    uri: str
    start: int
    stop: int | None
    verdicts: list[FrameVerdict] = field(default_factory=list)
    corrupt: int = 0
    ended: bool = False
    error: str | None = None


def probe_source(uri: str) -> SourceProbe:
    """Open ``uri`` as a worker would; a bad source becomes an error message, not an exception."""
    try:
        reader = RangeReader(uri)
    except InspectorError as error:
        return SourceProbe(uri, error=str(error))
    reader.close()
    return SourceProbe(uri, reader.source_id, reader.frame_count)


class FrameJudge:
    """One model on one worker: judges ``[start, stop)`` of a source, keeping the file open between ranges."""

    def __init__(self, config: StationFile) -> None:
        from inspector.pipeline import load_inspector

        # A model that cannot load is the user's to fix: kept and reported by ready(), not a dead actor.
        self.startup = WorkerReady()
        try:
            self.inspector = load_inspector(config)
        except InspectorError as error:
            self.startup = WorkerReady(problem=error.problem, hint=error.hint)
        else:
            self.startup = WorkerReady(warning=random_weights_warning(self.inspector.backend.info))
        # The local replay's policy: a frame that raises is UNCERTAIN with its error, and the file goes on.
        # The driver counts failures from the verdicts it writes (a retried chunk must not count twice).
        self.policy = ErrorPolicy(keep=0)
        self._reader: RangeReader | None = None  # one file open at a time: a worker's spans follow each other

    def ready(self) -> WorkerReady:
        """Answers once the model has loaded (or failed to)."""
        return self.startup

    def describe(self) -> dict[str, Any]:
        """The birth/status description of this worker's pipeline (for --publish)."""
        from inspector.pipeline import describe

        return describe(self.inspector)

    def judge(self, uri: str, start: int, stop: int | None) -> ChunkResult:
        result = ChunkResult(uri, start, stop)
        stats = RangeStats()
        try:
            reader = self._open(uri)
            for frame in reader.frames(start, stop, stats):
                result.verdicts.append(self.judge_frame(frame))
        except InspectorError as error:
            self._close()
            result.error = str(error)
        result.corrupt, result.ended = stats.corrupt, stats.ended
        return result

    def judge_frame(self, frame: Frame) -> FrameVerdict:
        """One frame's verdict (a seam: tests override it to kill the worker on a chosen frame)."""
        return self.policy.judge(self.inspector, frame)

    def _open(self, uri: str) -> RangeReader:
        if self._reader is None or self._reader.uri != uri:
            self._close()
            self._reader = RangeReader(uri)
        return self._reader

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

"""Offline replay: recorded footage -> verdicts -> sinks, resumable, with a summary and label metrics."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from inspector.explanations import Explained, explained
from inspector.frames import Frame
from inspector.model_warning import random_weights_warning
from inspector.payloads.verdict import FrameVerdict
from inspector.runtime import ErrorPolicy, FailFast, FrameFailure
from inspector.sinks.base import Sink

if TYPE_CHECKING:
    from inspector.evaluation.metrics import OutcomeCounts
    from inspector.pipeline import Inspector

log = logging.getLogger(__name__)


@dataclass
class ReplaySummary:
    frames: int = 0
    skipped_done: int = 0
    skipped_corrupt: int = 0
    verdicts: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    random_weights: bool = False
    model_warning: str | None = None  # random or demo model: what its verdicts are worth
    # (source id, frame index) -> verdict, kept for label metrics
    outcomes: dict[tuple[str, int], str] = field(default_factory=dict)
    # Frames whose inspection raised (each got an UNCERTAIN verdict carrying the error).
    failed: int = 0
    failures: list[FrameFailure] = field(default_factory=list)
    stopped_at: FrameFailure | None = None  # --fail-fast: the failure that ended the replay
    # NG frames with an explanation: how many, and the first few (for the summary).
    explained_total: int = 0
    explained: list[Explained] = field(default_factory=list)

    def record(self, verdict: FrameVerdict, *, keep: int = 20) -> None:
        """Count one verdict written (local and cluster replays alike); a failed frame carries its error."""
        key = (verdict.source.id, verdict.source.frame_index)
        self.frames += 1
        self.verdicts[verdict.verdict] += 1
        if verdict.error is None:  # a failed frame has no inspection time to speak of
            self.latencies_ms.append(verdict.timings.total_ms)
        else:
            self.failed += 1
            if len(self.failures) < keep:
                self.failures.append(FrameFailure(*key, verdict.error))
        self.outcomes[key] = verdict.verdict
        if verdict.verdict == "NG" and any(d.explanation for d in verdict.defects):
            self.explained_total += 1
            if len(self.explained) < keep:
                words = explained(verdict.model_dump(by_alias=True, exclude={"tiles"}))
                if words is not None:
                    self.explained.append(words)

    @property
    def latency_mean_ms(self) -> float:
        return float(np.mean(self.latencies_ms)) if self.latencies_ms else 0.0

    @property
    def latency_p95_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 95)) if self.latencies_ms else 0.0


def label_metrics(
    outcomes: dict[tuple[str, int], str], labels: dict[int, str], source_id: str | None = None
) -> OutcomeCounts:
    """Compare verdicts to per-frame OK/NG labels (frame index -> label) of one source.

    Counted by ``inspector.evaluation.metrics.outcome_counts``, the code `inspector evaluate` uses.
    """
    from inspector.evaluation.metrics import outcome_counts

    pairs = [
        (labels[index] == "NG", verdict)
        for (source, index), verdict in outcomes.items()
        if (source_id is None or source == source_id) and index in labels
    ]
    return outcome_counts([truth for truth, _ in pairs], [verdict for _, verdict in pairs])


def replay_frames(
    frames: Iterable[Frame],
    inspector: Inspector,
    sinks: Sequence[Sink],
    *,
    done: set[tuple[str, int]] | None = None,
    summary: ReplaySummary | None = None,
    on_frame: Callable[[Frame, FrameVerdict | None], None] | None = None,
    policy: ErrorPolicy | None = None,
) -> ReplaySummary:
    """Judge every frame not already in ``done`` and hand each verdict to every sink.

    A frame that fails is judged UNCERTAIN with its error (``policy``) and counted in the
    summary; with ``policy.fail_fast`` its verdict is written, then the replay stops
    (``summary.stopped_at``).
    """
    summary = summary if summary is not None else ReplaySummary()
    summary.random_weights = inspector.backend.info.random_weights
    summary.model_warning = random_weights_warning(inspector.backend.info)
    policy = policy if policy is not None else ErrorPolicy()
    done = done or set()
    for frame in frames:
        if (frame.source_id, frame.index) in done:
            summary.skipped_done += 1
            if on_frame:
                on_frame(frame, None)
            continue
        try:
            verdict = policy.judge(inspector, frame)
        except FailFast as stop:
            verdict, summary.stopped_at = stop.verdict, stop.failure
        for sink in sinks:
            sink.publish(verdict)
        summary.record(verdict, keep=policy.keep)
        if on_frame:
            on_frame(frame, verdict)
        if summary.stopped_at is not None:
            break
    return summary

"""What a station reports about itself: the condition its state is derived from, the heartbeat,
``/healthz``, and the retained status on MQTT (published when the state or its details change).

``StationStatus`` is a part of ``EdgeService`` (edge/supervisor.py): it reads the service's
workers and queues, and only publishes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edge.health import (
    Condition,
    FrameCounts,
    HealthMessage,
    Latency,
    LatencyWindow,
    RateMeter,
    SourceHealth,
    State,
    derive_state,
    gpu_memory,
    rss_bytes,
)
from edge.options import ServiceOptions
from edge.sdnotify import SystemdNotifier
from inspector.config import StationFile
from inspector.mqtt import MqttSink
from inspector.pipeline import describe

if TYPE_CHECKING:
    from edge.capture import CaptureWorker
    from edge.inference import InferenceWorker, Lane, Outgoing
    from edge.publish import PublishWorker
    from edge.queues import BoundedQueue
    from inspector.frames import Frame

log = logging.getLogger(__name__)


@dataclass
class PublishedStatus:
    state: State | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class StationStatus:
    """The health message, ``/healthz`` and the retained status of one station."""

    # Set by EdgeService.__init__.
    config: StationFile
    options: ServiceOptions
    mqtt: MqttSink | None
    notifier: SystemdNotifier
    capture: CaptureWorker
    inference: InferenceWorker | None
    publisher: PublishWorker
    lane: Lane
    frames: BoundedQueue[Frame]
    verdicts: BoundedQueue[Outgoing]
    latency: LatencyWindow
    _rate: RateMeter
    _fps: float
    _started: float
    _stopping: bool
    _discarded: int
    _published: PublishedStatus
    _status_lock: threading.RLock

    workers: list[threading.Thread]  # a property of EdgeService

    def _stalled(self) -> float | None:
        stalled = self.inference.stalled_s() if self.inference is not None else 0.0
        return stalled if stalled > self.options.stall_timeout_s else None

    def failing_streak(self) -> int:
        """Verdicts in a row that failed: frames whose inspection raised, or verdicts a sink refused."""
        return max(self.lane.consecutive_errors, self.publisher.consecutive_failed)

    def _failing(self) -> str | None:
        """Why the station is failing, once ``degraded_after`` verdicts in a row failed (fixed texts: the
        retained status is re-published only when the reason changes)."""
        if self.lane.consecutive_errors >= self.options.degraded_after:
            return "inspection failing: the last frames could not be inspected (see frames.errors)"
        if self.publisher.consecutive_failed >= self.options.degraded_after:
            return "sinks failing: the last verdicts could not be delivered (see frames.failed)"
        return None

    def condition(self) -> Condition:
        return Condition(
            workers_alive=all(w.is_alive() for w in self.workers) or self._stopping,
            source_healthy=self.capture.healthy,
            paused=self.lane.paused.is_set(),
            stopping=self._stopping,
            source_problem=self.capture.reason(),
            stalled_s=self._stalled(),
            failing=self._failing(),
        )

    def health(self) -> HealthMessage:
        state, reason = derive_state(self.condition())
        stats = self.capture.stats()
        p50, p95 = self.latency.percentiles(50, 95)
        outbox: dict[str, Any] = {}
        if self.mqtt is not None:
            sink = self.mqtt.stats()
            outbox = {k: sink.get(k) for k in ("outbox_messages", "outbox_bytes", "connected", "dropped", "last_error")}
            outbox["high_water"] = int(sink.get("outbox_high_water") or 0)
        source = self.capture.source
        return HealthMessage(
            at=datetime.now(UTC),
            state=state,
            reason=reason,
            paused=self.lane.paused.is_set(),
            uptime_s=round(time.monotonic() - self._started, 3),
            fps=self._fps,
            latency=Latency(p50_ms=p50, p95_ms=p95),
            frames=FrameCounts(
                captured=self.capture.captured,
                inspected=self.lane.inspected,
                errors=self.lane.errors,
                dropped=stats.dropped_stale + self.frames.dropped + self._discarded,
                published=self.publisher.published,
                failed=self.publisher.failed,
                spilled=self.publisher.spilled,
                lost=self.publisher.lost + self.lane.lost,
                failing_streak=self.failing_streak(),
            ),
            queues={
                "frames": len(self.frames),
                "verdicts": len(self.verdicts),
                **({"triggers": self.lane.triggers.waiting()} if self.lane.triggers is not None else {}),
            },
            outbox=outbox,
            source=SourceHealth(
                id=source.source_id if source else None,
                live=bool(source and source.is_live),
                healthy=self.capture.healthy,
                reconnects=stats.reconnects,
            ),
            gpu=gpu_memory(self.lane.inspector.backend.info.device),  # model.device auto, resolved
            rss_bytes=rss_bytes(),
            sink_failures=dict(self.publisher.sink_failures),
        )

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        """(serving, body) for ``/healthz``: serving while every worker runs and no shutdown began."""
        h = self.health()
        serving = not self._stopping and all(w.is_alive() for w in self.workers)
        return serving, h.model_dump(mode="json", by_alias=True)

    def _heartbeat(self) -> None:
        self._fps = self._rate.rate(self.lane.inspected)
        h = self.health()
        log.debug("heartbeat: %s", h.to_json())
        if self.mqtt is not None:
            self.mqtt.publish_health(h.model_dump(mode="json", by_alias=True))

    # -- the retained status --------------------------------------------------------------------------------

    def _status_extra(self, reason: str | None) -> dict[str, Any]:
        inspector = self.lane.inspector
        return {
            "reason": reason,
            "paused": self.lane.paused.is_set(),
            "trigger": self.config.source.trigger,
            "recipe": inspector.recipe,  # the selected one (edge/recipes.py); each verdict names its own
            # The birth message is fixed at connect; these say what runs now (after reloads).
            "running_model": inspector.model_ref.model_dump(mode="json"),
            "tiling": inspector.config.tiling.model_dump(mode="json"),
        }

    def _refresh_status(self, *, force: bool = False) -> None:
        with self._status_lock:
            state, reason = derive_state(self.condition())
            extra = self._status_extra(reason)
            if force or state != self._published.state or extra != self._published.extra:
                if state != self._published.state:
                    log.info("status %s%s", state, f" ({reason})" if reason else "")
                self._set_status(state, extra)

    def _set_status(self, state: State, extra: dict[str, Any]) -> None:
        with self._status_lock:
            self._published = PublishedStatus(state, extra)
            self.notifier.status(f"{state}" + (f": {extra.get('reason')}" if extra.get("reason") else ""))
            if self.mqtt is not None:
                self.mqtt.set_status(state, extra, reason=extra.get("reason"), birth=describe(self.lane.inspector))

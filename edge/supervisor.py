"""The running service: starts the workers, watches them, reports state, executes commands, shuts down.

The supervisor loop (main thread) wakes every ``tick_s``: it pets the systemd watchdog only
while every worker is alive (a wedged or dead worker gets the process restarted), turns
the workers' condition into the retained station status when it changes, and publishes a
heartbeat every ``heartbeat_s``. A worker that dies is a bug, not a condition to limp
along with: the service shuts down cleanly and exits 1 so that systemd restarts it.

Shutdown (SIGTERM / SIGINT, or a file source that ended): capture stops, inference
finishes the frame in flight (for an ended file: every queued frame), the publisher hands
every produced verdict to the sinks, and the sinks flush (the MQTT outbox within
``drain_timeout_s``) and publish the offline status.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from edge.capture import CaptureWorker, source_opener
from edge.collectors import StationCollector
from edge.control import CommandProcessor
from edge.evidence import EvidenceStore
from edge.evidence_worker import EvidenceWriter
from edge.health import LatencyWindow, RateMeter
from edge.inference import InferenceWorker, Lane, Outgoing
from edge.line_control import StationLineControl
from edge.matching import FrameMatcher
from edge.metrics import EdgeMetrics
from edge.options import ServiceOptions
from edge.publish import PublishWorker
from edge.queues import BoundedQueue
from edge.recipes import RecipeBook
from edge.reload import Overrides
from edge.sdnotify import SystemdNotifier
from edge.station_commands import StationCommands
from edge.station_link import StationLink
from edge.status import PublishedStatus, StationStatus
from edge.triggers import PendingTrigger, TriggerBook, TriggerSettings
from edge.web import LiveState, LiveStation
from inspector.config import EvidenceConfig, MqttConfig, StationFile
from inspector.frames import Frame
from inspector.model_warning import random_weights_warning
from inspector.mqtt import MqttSink
from inspector.payloads.verdict import FrameVerdict, SourceRef
from inspector.pipeline import Inspector
from inspector.sinks.base import Sink
from inspector.sources import FrameSource

log = logging.getLogger(__name__)


class EdgeService(StationStatus, StationCommands, StationLineControl):
    """One station's long-running inspection. Build it, ``run()`` it, get an exit code."""

    def __init__(
        self,
        config: StationFile,
        inspector: Inspector,
        source: FrameSource | None,
        *,
        sinks: list[Sink],
        mqtt: MqttSink | None,
        metrics: EdgeMetrics,
        notifier: SystemdNotifier,
        options: ServiceOptions,
        overrides: Overrides,
        stop_event: threading.Event | None = None,
        evidence: EvidenceConfig | None = None,
        mqtt_config: MqttConfig | None = None,
        shared_inference: bool = False,
    ) -> None:
        self.config = config
        self.name = config.station.station
        self.options = options
        self.overrides = overrides
        self.sinks = sinks
        self.mqtt = mqtt
        self.metrics = metrics
        self.notifier = notifier
        self.stop_event = stop_event or threading.Event()
        triggered = config.source.trigger != "none"  # parts from trigger_part (OPC UA, API) and/or MQTT
        mqtt_triggers = config.source.trigger == "mqtt"
        # The second connection (edge/station_link.py): triggers in, the last NG picture out.
        self.link: StationLink | None = None
        if mqtt_config is not None and (mqtt_triggers or (evidence is not None and evidence.mqtt_snapshot)):
            self.link = StationLink(mqtt_config, config.station, on_trigger=self._on_trigger if mqtt_triggers else None)
        self.evidence: EvidenceWriter | None = None
        if evidence is not None and evidence.enabled:
            snapshot = self.link.publish_snapshot if self.link is not None else None
            store = EvidenceStore(evidence, publish_snapshot=snapshot)
            self.evidence = EvidenceWriter(store, queue_size=evidence.queue_size)  # off the inference thread
        self.latency = LatencyWindow()
        self.frames: BoundedQueue[Frame] = BoundedQueue(options.queue_size)
        self.verdicts: BoundedQueue[Outgoing] = BoundedQueue(max(options.queue_size, 16))
        self.capture = CaptureWorker(
            source, source_opener(config.source), self.frames, reconnect=config.source.reconnect
        )
        self.live = LiveState(self.name, model_warning=random_weights_warning(inspector.backend.info))
        self.publisher = PublishWorker(
            self.verdicts, sinks, observe=self.live.observe, spill=options.spill_file, retries=options.sink_retries
        )
        # Every recipe of the config, built now (a recipe that cannot load fails the start, not a part).
        self.recipes = RecipeBook(config, inspector)
        self.lane = Lane(
            self.name, inspector, self.frames, self.verdicts, self.publisher.is_alive,
            observe_latency=self._observe_latency, finish=self._finish, recipes=self.recipes,
        )  # fmt: skip
        if triggered:
            self.lane.triggers = TriggerBook(
                TriggerSettings.from_source(config.source),
                unserved=self._unserved, emit=self.lane.emit, problem=self._trigger_problem,
                recipe_for=self._recipe_for,
            )  # fmt: skip
            self.lane.triggers.on_accepted = self._fire_camera
            self.lane.matcher = FrameMatcher(hold_s=config.source.trigger_timeout_s)
        # Several stations in one process share one inference worker (edge/stations.py), which owns it.
        self._owns_inference = not shared_inference
        self.inference: InferenceWorker | None = None if shared_inference else InferenceWorker(self.lane)
        self.commands = (
            CommandProcessor(mqtt, self, on_result=metrics.count_command, accepted=options.mqtt_commands)
            if mqtt is not None
            else None
        )
        self._started = time.monotonic()
        self._rate = RateMeter()
        self._fps = 0.0
        self._stopping = False
        self._discarded = 0  # frames thrown away on resume (stale) and at shutdown (queued)
        self._published = PublishedStatus()
        self._reload_lock = threading.Lock()
        self._status_lock = threading.RLock()  # the supervisor and the command thread both refresh it
        self._next_heartbeat = time.monotonic()
        metrics.attach(self.health, lambda: dict(self.publisher.by_verdict))
        metrics.registry.register(StationCollector(self.lane.triggers, self.evidence))

    @property
    def triggers(self) -> TriggerBook | None:
        return self.lane.triggers

    def live_station(self) -> LiveStation:
        """This station on the live page: its state and buttons."""
        return LiveStation(self.live, self.pause, self.resume, self.lane.paused.is_set)

    # -- running -------------------------------------------------------------------------------

    @property
    def workers(self) -> list[threading.Thread]:
        """The threads this station depends on (the shared inference worker included)."""
        workers = (self.capture, self.inference, self.publisher, self.commands, self.evidence)
        return [w for w in workers if w is not None]

    def start(self) -> None:
        if self.inference is None:
            raise RuntimeError("a station with shared inference needs attach_inference() before start()")
        for worker in (self.capture, self.publisher, self.commands, self.evidence):
            if worker is not None:
                worker.start()
        if self._owns_inference:
            self.inference.start()
        if self.commands is not None:
            self.commands.attach()
        if self.link is not None:
            self.link.start()
        self._refresh_status(force=True)

    def attach_inference(self, worker: InferenceWorker) -> None:
        """The shared worker serving this station's lane (multi-station processes)."""
        self.inference = worker

    def run(self) -> int:
        """Supervise until stopped; returns the process exit code (0 clean, 1 a worker died or
        ``exit_after`` verdicts in a row failed)."""
        self.start()
        self.notifier.ready(f"inspecting {self.capture.source.source_id if self.capture.source else '?'}")
        log.info("inspecting; heartbeat every %g s", self.options.heartbeat_s)
        exit_code = 0
        drain_frames = False
        while not self.stop_event.wait(self.options.tick_s):
            dead = self.dead_workers()
            if dead:
                log.error("worker(s) %s stopped unexpectedly; shutting down for a restart", ", ".join(dead))
                exit_code = 1
                break
            if self.failed_too_often():
                exit_code = 1
                break
            if self.watchdog_ok():
                self.notifier.watchdog()  # only while every worker is alive, inference moves and verdicts go out
            self.tick()
            if self.capture.finished.is_set():
                log.info("the source has ended; finishing the queued frames")
                drain_frames = True
                break
        self.shutdown(drain_frames=drain_frames)
        return exit_code

    def watchdog_ok(self) -> bool:
        """Whether systemd's watchdog may be petted: inference moves and verdicts do not fail in a row."""
        return not self._stalled() and self._failing() is None

    def failed_too_often(self) -> bool:
        """``exit_after`` verdicts in a row failed: a restart may cure what limping along does not."""
        streak, limit = self.failing_streak(), self.options.exit_after
        if limit and streak >= limit:
            log.error("%s: %d verdicts in a row failed (edge.exit_after: %d); exiting for a restart",
                      self.name, streak, limit)  # fmt: skip
            return True
        return False

    def dead_workers(self) -> list[str]:
        """Workers that stopped unexpectedly (a capture whose file ended is not one)."""
        dead = [w.name for w in self.workers if not w.is_alive()]
        return [] if dead == ["capture"] and self.capture.finished.is_set() else dead

    def tick(self) -> None:
        """One supervisor tick: answer overdue triggers, refresh the status, heartbeat when due."""
        if self.lane.triggers is not None:
            self.lane.triggers.expire()  # also while inference is busy or paused: never silence
        self._refresh_status()
        if time.monotonic() >= self._next_heartbeat:
            self._next_heartbeat = time.monotonic() + self.options.heartbeat_s
            self._heartbeat()

    def shutdown(self, *, drain_frames: bool = False) -> None:
        self.stop_capture()
        if self.inference is not None and self._owns_inference:
            self.inference.stop(drain=drain_frames)
            self.inference.join()  # the frame in flight; a wedged model is systemd's TimeoutStopSec to end
        self.finish_shutdown()

    def stop_capture(self) -> None:
        """First step of a shutdown: say offline, stop taking frames."""
        self._stopping = True
        self.notifier.stopping("draining")
        if self.mqtt is not None:
            self._set_status("offline", {"reason": "shutting down"})
        self.capture.stop()
        self.capture.join(5.0)

    def finish_shutdown(self) -> None:
        """Last step, once inference has stopped: publish what is queued, close the sinks."""
        self._discarded += self.frames.clear()
        if self.lane.triggers is not None:
            self.lane.triggers.expire_all("the service is shutting down")
        self.publisher.stop()
        self.publisher.join()
        if self.commands is not None:
            self.commands.stop()
            self.commands.join(5.0)
        if self.evidence is not None:
            self.evidence.close(self.options.drain_timeout_s)  # the queued pictures (the last NG goes on the link)
        if self.link is not None:
            self.link.close()
        self._heartbeat()
        for sink in self.sinks:
            try:
                sink.close(self.options.drain_timeout_s)
            except Exception:  # noqa: BLE001 - close the others regardless
                log.exception("closing %s failed", type(sink).__name__)
        h = self.health()
        log.info(
            "%s stopped: %d frames inspected, %d published, %d dropped, outbox %s",
            self.name,
            h.frames.inspected,
            h.frames.published,
            h.frames.dropped,
            h.outbox.get("outbox_messages", "n/a"),
        )

    # -- verdicts ------------------------------------------------------------------------------

    def _on_trigger(self, payload: bytes, received_at: datetime) -> None:
        if self.lane.triggers is not None and not self._stopping:
            self.lane.triggers.submit(payload, received_at=received_at)

    def _fire_camera(self, trigger: PendingTrigger) -> None:
        """A software-triggered camera takes the part's images now, while the part is in front of it."""
        source = self.capture.source
        fire = getattr(source, "fire", None)
        if fire is None or not source.keeps_every_frame or self.config.source.camera.trigger != "software":
            return
        for _ in range(trigger.frames):
            fire(trigger.part_id)

    def _finish(self, frame: Frame, verdict: FrameVerdict) -> FrameVerdict:
        return self.evidence.attach(frame, verdict) if self.evidence is not None else verdict

    def _unserved(self, trigger: PendingTrigger, reason: str) -> FrameVerdict:
        """The UNCERTAIN verdict of a part no frame was judged for."""
        inspector = self.lane.inspector
        last = self.lane.last
        source = self.capture.source
        return FrameVerdict(
            station=inspector.station_ref,
            source=SourceRef(
                id=source.source_id if source else str(self.config.source.uri),
                frame_index=last.frame.index if last else 0,
                captured_at=trigger.received_at,
                part_id=trigger.part_id,
            ),
            verdict="UNCERTAIN",
            confidence=0.0,
            model=inspector.model_ref,
            recipe=trigger.recipe or inspector.recipe,
            error=reason,
        )

    def _trigger_problem(self) -> str | None:
        if self.lane.paused.is_set():
            return "the station is paused"
        if not self.capture.healthy:
            return self.capture.reason() or "the camera delivers no frames"
        if self._stalled():
            return "inference is stalled"
        source = self.capture.source
        if source is not None and source.problem:  # e.g. a camera whose images for the part came back failed
            return source.problem
        return "no frame captured after the trigger was judged in time (inference behind)"

    # -- figures -------------------------------------------------------------------------------

    def _observe_latency(self, ms: float) -> None:
        self.latency.add(ms)
        self.metrics.observe_latency_ms(ms)

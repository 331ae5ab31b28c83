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
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.commands import COMMAND_NAMES, CommandRejected, ReloadConfigCommand
from edge.control import CommandProcessor
from edge.evidence import EvidenceStore
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
from edge.metrics import EdgeMetrics
from edge.reload import (
    Overrides,
    build_candidate,
    check_swappable,
    needs_model_load,
    requested_config,
    trial_frame_size,
)
from edge.sdnotify import SystemdNotifier
from edge.snapshot import save_snapshot
from edge.station_link import StationLink
from edge.triggers import PendingTrigger, TriggerBook, TriggerSettings
from edge.web import LivePage, LiveServer, LiveState, LiveStation
from edge.web.access import load_token
from edge.workers import BoundedQueue, CaptureWorker, InferenceWorker, Lane, Outgoing, PublishWorker, SourceOpener
from inspector.config import EdgeConfig, EvidenceConfig, MqttConfig, SourceConfig, StationFile
from inspector.frames import Frame
from inspector.model_warning import random_weights_warning
from inspector.mqtt import MqttSink
from inspector.payloads.verdict import FrameVerdict, SourceRef
from inspector.pipeline import Inspector, describe
from inspector.sinks.base import Sink
from inspector.sources import FrameSource, open_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceOptions:
    heartbeat_s: float = 10.0
    snapshot_dir: Path = Path("snapshots")
    queue_size: int = 4
    drain_timeout_s: float = 10.0
    tick_s: float = 0.25
    # Longest a reload may wait for the frame in flight before it is applied.
    reload_timeout_s: float = 120.0
    # One frame in inference longer than this is a hang: degraded, and the watchdog is no longer petted.
    stall_timeout_s: float = 60.0
    # Folders reload-config may read (the config file's own first); empty: no path is accepted.
    reload_dirs: tuple[Path, ...] = ()
    mqtt_commands: tuple[str, ...] = COMMAND_NAMES


def source_opener(config: SourceConfig) -> SourceOpener:
    """How (re)opening the configured source is done; live sources start even while the camera is down."""
    if config.uri is None:
        from inspector.errors import ConfigError

        raise ConfigError("no source to inspect", "set source.uri in the config or pass --source")
    uri = config.uri

    def opener() -> FrameSource:
        return open_source(uri, pace=config.pace, loop=config.loop, reconnect=config.reconnect, wait_for_first=True)

    return opener


def service_options(settings: EdgeConfig, config_path: Path | None) -> ServiceOptions:
    """The service's options from the (flag-overridden) ``edge:`` section."""
    folders = ([config_path.resolve().parent] if config_path is not None else []) + list(settings.reload_paths)
    return ServiceOptions(
        heartbeat_s=settings.heartbeat_s,
        snapshot_dir=settings.snapshot_dir.resolve(),
        queue_size=settings.queue_size,
        drain_timeout_s=settings.drain_timeout_s,
        stall_timeout_s=settings.stall_timeout_s,
        reload_dirs=tuple(folders),
        mqtt_commands=tuple(settings.mqtt_commands),
    )


def start_live_page(settings: EdgeConfig, stations: dict[str, LiveStation]) -> LiveServer | None:
    """Serve the live page (edge/web) unless ``live_port`` is 0. A port that is taken is logged, not fatal:
    the page is a view, and the line must run without it. A token file that cannot be read is fatal."""
    if not settings.live_port:
        return None
    token = load_token(settings.live_token_env, settings.live_token_file)
    if token is None:
        log.info("live page: no token set (%s): read-only, and only from this machine",
                 f"${settings.live_token_env}" if settings.live_token_env else "edge.live_token_file")  # fmt: skip
    elif settings.live_host in ("127.0.0.1", "localhost", "::1"):
        log.info("live page: bound to %s; set edge.live_host to reach it from elsewhere", settings.live_host)
    try:
        return LiveServer(settings.live_host, settings.live_port, LivePage(stations, token))
    except OSError as error:
        log.error(
            "live page not served: cannot bind %s:%d (%s); pick another edge.live_port (0: off)",
            settings.live_host, settings.live_port, error.strerror or error,
        )  # fmt: skip
        return None


class _StationCollector(Collector):
    """Trigger outcomes and evidence pictures on ``/metrics`` (read at scrape time, like the rest)."""

    def __init__(self, service: EdgeService) -> None:
        self._service = service

    def collect(self) -> Iterable[Metric]:
        service = self._service
        families: list[Metric] = []
        if service.lane.triggers is not None:
            outcomes = CounterMetricFamily(
                "inspector_triggers", "Triggers received, by outcome (edge/triggers.py).", labels=["outcome"]
            )
            for outcome, count in sorted(service.lane.triggers.counts.items()):
                outcomes.add_metric([outcome], count)
            families.append(outcomes)
            families.append(GaugeMetricFamily(
                "inspector_triggers_waiting", "Parts waiting for a frame.", value=service.lane.triggers.waiting()
            ))  # fmt: skip
        if service.evidence is not None:
            pictures = CounterMetricFamily("inspector_evidence", "Evidence pictures, by outcome.", labels=["outcome"])
            for outcome in ("saved", "removed", "failures"):
                pictures.add_metric([outcome], getattr(service.evidence, outcome))
            families.append(pictures)
        return families


@dataclass
class _Published:
    state: State | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class EdgeService:
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
        triggered = config.source.trigger == "mqtt"
        # The second connection (edge/station_link.py): triggers in, the last NG picture out.
        self.link: StationLink | None = None
        if mqtt_config is not None and (triggered or (evidence is not None and evidence.mqtt_snapshot)):
            self.link = StationLink(mqtt_config, config.station, on_trigger=self._on_trigger if triggered else None)
        self.evidence: EvidenceStore | None = None
        if evidence is not None and evidence.enabled:
            snapshot = self.link.publish_snapshot if self.link is not None else None
            self.evidence = EvidenceStore(evidence, publish_snapshot=snapshot)
        self.latency = LatencyWindow()
        self.frames: BoundedQueue[Frame] = BoundedQueue(options.queue_size)
        self.verdicts: BoundedQueue[Outgoing] = BoundedQueue(max(options.queue_size, 16))
        self.capture = CaptureWorker(
            source, source_opener(config.source), self.frames, reconnect=config.source.reconnect
        )
        self.live = LiveState(self.name, model_warning=random_weights_warning(inspector.backend.info))
        self.publisher = PublishWorker(self.verdicts, sinks, observe=self.live.observe)
        self.lane = Lane(
            self.name, inspector, self.frames, self.verdicts, self.publisher.is_alive,
            observe_latency=self._observe_latency, finish=self._finish,
        )  # fmt: skip
        if triggered:
            self.lane.triggers = TriggerBook(
                TriggerSettings.from_source(config.source),
                unserved=self._unserved, emit=self.lane.emit, problem=self._trigger_problem,
            )  # fmt: skip
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
        self._published = _Published()
        self._reload_lock = threading.Lock()
        self._status_lock = threading.RLock()  # the supervisor and the command thread both refresh it
        self._next_heartbeat = time.monotonic()
        metrics.attach(self.health, lambda: dict(self.publisher.by_verdict))
        metrics.registry.register(_StationCollector(self))

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
        return [w for w in (self.capture, self.inference, self.publisher, self.commands) if w is not None]

    def start(self) -> None:
        if self.inference is None:
            raise RuntimeError("a station with shared inference needs attach_inference() before start()")
        for worker in (self.capture, self.publisher, self.commands):
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
        """Supervise until stopped; returns the process exit code (0 clean, 1 a worker died)."""
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
            if not self._stalled():
                self.notifier.watchdog()  # only while every worker is alive and inference moves
            self.tick()
            if self.capture.finished.is_set():
                log.info("the source has ended; finishing the queued frames")
                drain_frames = True
                break
        self.shutdown(drain_frames=drain_frames)
        return exit_code

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
            error=reason,
        )

    def _trigger_problem(self) -> str | None:
        if self.lane.paused.is_set():
            return "the station is paused"
        if not self.capture.healthy:
            return self.capture.problem or "the camera delivers no frames"
        if self._stalled():
            return "inference is stalled"
        return "no frame captured after the trigger was judged in time (inference behind)"

    # -- figures -------------------------------------------------------------------------------

    def _observe_latency(self, ms: float) -> None:
        self.latency.add(ms)
        self.metrics.observe_latency_ms(ms)

    def _stalled(self) -> float | None:
        stalled = self.inference.stalled_s() if self.inference is not None else 0.0
        return stalled if stalled > self.options.stall_timeout_s else None

    def condition(self) -> Condition:
        return Condition(
            workers_alive=all(w.is_alive() for w in self.workers) or self._stopping,
            source_healthy=self.capture.healthy,
            paused=self.lane.paused.is_set(),
            stopping=self._stopping,
            source_problem=self.capture.problem,
            stalled_s=self._stalled(),
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

    # -- status --------------------------------------------------------------------------------

    def _status_extra(self, reason: str | None) -> dict[str, Any]:
        inspector = self.lane.inspector
        return {
            "reason": reason,
            "paused": self.lane.paused.is_set(),
            "trigger": self.config.source.trigger,
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
            self._published = _Published(state, extra)
            self.notifier.status(f"{state}" + (f": {extra.get('reason')}" if extra.get("reason") else ""))
            if self.mqtt is not None:
                self.mqtt.set_status(state, extra, reason=extra.get("reason"), birth=describe(self.lane.inspector))

    # -- commands (Controllable) ---------------------------------------------------------------

    def pause(self) -> dict[str, Any]:
        self.lane.paused.set()
        self._refresh_status()
        return {"paused": True}

    def resume(self) -> dict[str, Any]:
        if self.lane.paused.is_set():
            source = self.capture.source
            if source is not None and source.is_live:
                self._discarded += self.frames.clear()  # stale by now: inspect what the line shows next
            self.lane.paused.clear()
        self._refresh_status()
        return {"paused": False}

    def snapshot(self, label: str | None) -> dict[str, Any]:
        last = self.lane.last
        if last is None:
            raise CommandRejected("no frame has been inspected yet; nothing to snapshot", "snapshot")
        try:
            files = save_snapshot(self.options.snapshot_dir, last.frame, last.verdict, label)
        except OSError as error:
            raise CommandRejected(
                f"snapshot could not be written to {self.options.snapshot_dir}: {error}", "snapshot"
            ) from None
        return {
            "image": str(files.image),
            "verdict": str(files.verdict),
            "frame_index": last.frame.index,
            "verdict_message_id": last.verdict.message_id,
            "result": last.verdict.verdict,
        }

    def reload_config(self, command: ReloadConfigCommand) -> dict[str, Any]:
        # One reload at a time: two concurrent model loads would double the memory for nothing.
        if not self._reload_lock.acquire(blocking=False):
            raise CommandRejected("another reload-config is in progress", "reload-config")
        try:
            return self._reload(command)
        finally:
            self._reload_lock.release()

    def _reload(self, command: ReloadConfigCommand) -> dict[str, Any]:
        candidate = requested_config(command, self.overrides, allowed_dirs=self.options.reload_dirs)
        check_swappable(self.config, candidate)
        if candidate == self.config:
            return {"changed": False}
        running = self.lane.inspector
        model_reloaded = needs_model_load(running.config, candidate)
        if model_reloaded and not self._owns_inference:
            raise CommandRejected(
                "reload-config cannot change the model of one station of a multi-station process (every "
                "station shares one model); change it in the stations file and restart the service",
                "reload-config",
            )
        new = build_candidate(running, candidate)

        def trial_and_swap() -> None:
            # On the inference thread, between frames: the model is never used by two threads.
            # The current frame shows what the line looks like; a new source may not, so then a blank one.
            last = self.lane.last
            usable = last is not None and candidate.source == self.config.source
            frame = last.frame if last is not None and usable else _blank_frame(trial_frame_size(new))
            try:
                new.inspect(frame)
            except Exception as error:  # noqa: BLE001 - reported to the requester, nothing swapped
                width, height = frame.size
                raise CommandRejected(
                    f"reload-config: the new config cannot inspect a {width}x{height} frame: "
                    f"{type(error).__name__}: {error}",
                    "reload-config",
                ) from None
            self.lane.inspector = new

        try:
            if self.inference is None:
                raise RuntimeError("the inference worker is not running")
            self.inference.call_between_frames(trial_and_swap, self.options.reload_timeout_s)
        except TimeoutError:
            raise CommandRejected(
                "reload-config: the frame in flight did not finish in time; nothing changed", "reload-config"
            ) from None
        except RuntimeError as error:
            raise CommandRejected(f"reload-config: {error}", "reload-config") from None
        source_changed = candidate.source != self.config.source
        self.config = candidate
        if source_changed:
            self.capture.switch_source(source_opener(candidate.source))
        log.info(
            "config reloaded (model %s, source %s)",
            "reloaded" if model_reloaded else "kept",
            "reopened" if source_changed else "kept",
        )
        self._refresh_status()
        return {"changed": True, "model_reloaded": model_reloaded, "source_changed": source_changed}


def _blank_frame(size: tuple[int, int]) -> Frame:
    return Frame(np.zeros((size[1], size[0], 3), np.uint8), "reload-trial", 0, datetime.now(UTC))

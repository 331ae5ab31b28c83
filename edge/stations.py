"""Several cameras on one box: one ``inspector-edge`` process, one model, one station per camera.

A multi-station file has a ``stations:`` mapping instead of one station's sections::

    edge: {metrics_port: 9108, live_port: 9109}     # the process's settings, shared
    common:                                          # merged under every station (deeply)
      model: {path: /models/qwen3-vl-4b, batch_size: 8}
      inspection: {...}
      sinks: {mqtt: {host: broker.local}}
    stations:
      press-1: {source: {uri: rtsp://cam1/stream}, sinks: {mqtt: {outbox: /var/lib/li/press-1.sqlite}}}
      press-2: {source: {uri: rtsp://cam2/stream}, sinks: {mqtt: {outbox: /var/lib/li/press-2.sqlite}}}

Each station is a whole station config (validated as one, errors name ``stations.<name>``), with
its own topics, status, outbox, commands, triggers, evidence, spill file and live-page panel; its
``station.station`` defaults to its key. Every station must name the same ``model``: the
process loads it once, and one inference worker (edge/inference.py) takes the freshest frame of
each camera per round and sends their tiles through the model as one batch. A camera that is
dead or slow only has no frame in a round; the others are judged without waiting for it.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from contextlib import ExitStack
from typing import Any

from prometheus_client import CollectorRegistry

from edge.capture import source_opener
from edge.collectors import StationsCollector
from edge.inference import InferenceWorker
from edge.options import edge_settings, require_a_sink, service_options, station_options
from edge.sdnotify import SystemdNotifier
from edge.servers import serve_health, start_live_page
from edge.supervisor import EdgeService
from inspector.config import EdgeConfig
from inspector.errors import ConfigError, InspectorError
from inspector.stations import load_stations

log = logging.getLogger(__name__)


class MultiStationService:
    """Several ``EdgeService`` stations around one shared inference worker, supervised as one process."""

    def __init__(
        self,
        services: list[EdgeService],
        *,
        notifier: SystemdNotifier,
        stop_event: threading.Event | None = None,
        tick_s: float = 0.25,
    ) -> None:
        if not services:
            raise ValueError("no station to serve")
        self.services = services
        self.notifier = notifier
        self.stop_event = stop_event or threading.Event()
        self.tick_s = tick_s
        self.inference = InferenceWorker([service.lane for service in services])
        for service in services:
            service.attach_inference(self.inference)

    def start(self) -> None:
        self.inference.start()
        for service in self.services:
            service.start()

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        bodies = {service.name: service.healthz() for service in self.services}
        serving = all(ok for ok, _ in bodies.values())
        return serving, {"stations": {name: body for name, (_, body) in bodies.items()}}

    def run(self) -> int:
        """Supervise every station until stopped; 0 after a clean stop, 1 when a worker died."""
        self.start()
        self.notifier.ready(f"inspecting {len(self.services)} stations")
        log.info("inspecting %d stations with one model: %s", len(self.services),
                 ", ".join(s.name for s in self.services))  # fmt: skip
        exit_code = 0
        drain = False
        while not self.stop_event.wait(self.tick_s):
            dead = [f"{s.name}/{w}" for s in self.services for w in s.dead_workers()]
            if dead:
                log.error("worker(s) %s stopped unexpectedly; shutting down for a restart", ", ".join(dead))
                exit_code = 1
                break
            if any(s.failed_too_often() for s in self.services):
                exit_code = 1
                break
            if all(s.watchdog_ok() for s in self.services):  # one watchdog for all stations
                self.notifier.watchdog()
            for service in self.services:
                service.tick()
            if all(s.capture.finished.is_set() for s in self.services):
                log.info("every source has ended; finishing the queued frames")
                drain = True
                break
        self.shutdown(drain_frames=drain)
        return exit_code

    def shutdown(self, *, drain_frames: bool = False) -> None:
        self.notifier.stopping("draining")
        for service in self.services:
            service.stop_capture()
        self.inference.stop(drain=drain_frames)
        self.inference.join()
        for service in self.services:
            service.finish_shutdown()


def serve_stations(args: argparse.Namespace, stop: threading.Event, received: list[str]) -> int:
    """``inspector-edge --config stations.yaml``: every station in the file, one model."""
    from edge.line_links import open_line_links
    from edge.metrics import EdgeMetrics
    from edge.reload import build_candidate, trial_frame_size
    from inspector.mqtt.connection import check_connection_or_warn
    from inspector.pipeline import load_inspector, warm_up
    from inspector.runtime import Overrides, build_sinks, mqtt_settings

    if args.source is not None or args.publish is not None:
        raise ConfigError(
            "--source and --publish name one camera and one broker; a multi-station file sets them per station",
            "set source.uri (and sinks.mqtt) in each station's section, or in common:",
        )
    edge, configs = load_stations(args.config)
    overrides = Overrides(model=args.model, backend=args.backend, onnx_dir=getattr(args, "onnx_dir", None),
                          device=getattr(args, "device", None), loop=args.loop, pace=args.pace)  # fmt: skip
    configs = {name: overrides.apply(config) for name, config in configs.items()}
    settings = edge_settings(next(iter(configs.values())).model_copy(update={"edge": edge}), args)
    for name, config in configs.items():
        require_a_sink(f"{args.config}: stations.{name}", jsonl=config.sinks.jsonl, mqtt=config.sinks.mqtt,
                       no_sink=getattr(args, "no_sink", False))  # fmt: skip
    notifier = SystemdNotifier()
    with ExitStack() as stack:
        stack.callback(notifier.close)
        sources = {}
        for name, config in configs.items():
            sources[name] = source_opener(config.source)()  # a missing file fails here, before the model loads
            stack.callback(sources[name].close)
        for config in configs.values():
            if config.sinks.mqtt is not None:
                check_connection_or_warn(config.sinks.mqtt, logger=log)
        # One OPC UA server and one Sparkplug node for the box; a station is an object / a device of them.
        first_mqtt = next((c.sinks.mqtt for c in configs.values() if c.sinks.mqtt is not None), None)
        links = open_line_links(settings, first_mqtt)
        if stop.is_set():
            return 0
        notifier.status("loading model")
        first = load_inspector(next(iter(configs.values())))
        warm_up(first, trial_frame_size(first))
        services: list[EdgeService] = []
        metrics: dict[str, CollectorRegistry] = {}
        for index, (name, config) in enumerate(configs.items()):
            try:  # the one model, each station's own prompt, tiling and thresholds
                inspector = first if index == 0 else build_candidate(first, config)
            except Exception as error:  # noqa: BLE001 - CommandRejected from the shared builder
                raise InspectorError(f"stations.{name}: {error}") from None
            mqtt_config = mqtt_settings(config, None, from_config=True)
            jsonl = config.sinks.jsonl.path if config.sinks.jsonl is not None else None
            station_sinks = build_sinks(config, inspector, jsonl=jsonl, mqtt=mqtt_config)
            station_metrics = EdgeMetrics()
            metrics[name] = station_metrics.registry
            services.append(
                EdgeService(
                    config,
                    inspector,
                    sources[name],
                    sinks=station_sinks.sinks + links.sinks_for(config.station.station),
                    mqtt=station_sinks.mqtt,
                    metrics=station_metrics,
                    notifier=SystemdNotifier(""),
                    stop_event=stop,
                    options=station_options(service_options(settings, args.config), name),
                    overrides=overrides,
                    evidence=_station_evidence(settings, name),
                    mqtt_config=mqtt_config,
                    shared_inference=True,
                )  # fmt: skip
            )
        for service in services:
            links.attach(service)
        stack.callback(links.close)  # after the stations have stopped
        links.start()
        runner = MultiStationService(services, notifier=notifier, stop_event=stop)
        if settings.metrics_port:
            registry = CollectorRegistry()
            registry.register(StationsCollector(metrics))
            server = serve_health(settings, registry, runner.healthz)
            stack.callback(server.close)
        live = start_live_page(settings, {s.name: s.live_station() for s in services})
        if live is not None:
            stack.callback(live.close)
        began = time.monotonic()
        code = runner.run()
        log.info("served %d stations for %.0f s", len(services), time.monotonic() - began)
        if received:
            log.info("stopped by %s", received[0])
        return code


def _station_evidence(settings: EdgeConfig, name: str) -> Any:
    """Each station's pictures in its own folder under ``edge.evidence.dir`` (retention per station)."""
    evidence = settings.evidence
    return evidence.model_copy(update={"dir": evidence.dir / name})

"""``inspector-edge`` (also ``python -m edge``): the long-running inspection service on the edge box.

Start-up order is chosen so that mistakes fail in seconds, before the model loads: the
config, the source (a missing file is an error; a camera that is down is not — it is
retried, with a degraded status), the MQTT credentials and TLS (a broker that is down is
not an error: verdicts wait in the outbox). Then the model loads and judges one warm-up
frame, the workers start and systemd is told READY.

Exit codes: 0 after a clean stop (SIGTERM / SIGINT, or a file source that ended),
1 when a worker died (systemd restarts the service), 2 for a problem with the
configuration or the environment that a restart would not cure.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from edge.capture import source_opener
from edge.options import edge_settings, require_a_sink, service_options
from edge.reload import trial_frame_size
from edge.sdnotify import SystemdNotifier
from edge.servers import serve_health, start_live_page
from inspector.backends.registry import backend_names
from inspector.config import load_config
from inspector.errors import InspectorError
from inspector.runtime import Overrides

log = logging.getLogger("edge")

EXAMPLES = """\
examples:
  inspector-edge --config configs/demo.yaml --source demo/clip.mp4 --loop --publish mqtt://127.0.0.1:1883
  inspector-edge --config /etc/line-inspector/station.yaml --metrics-host 0.0.0.0 --metrics-port 9108

service settings (heartbeat, metrics, snapshots, queue, timeouts) come from the config's
`edge:` section; the flags below override it, and the defaults shown apply when neither sets them.

commands (MQTT v5 request/response on <topic_root>/<site>/<area>/<line>/<station>/cmd):
  {"command": "pause"} | {"command": "resume"} | {"command": "snapshot", "label": "x"}
  {"command": "reload-config", "path": "/etc/line-inspector/station.yaml"} | {..., "config": {...}}
  (reload-config paths: the config's own folder or edge.reload_paths; edge.mqtt_commands limits the set)

triggered inspection (source.trigger: mqtt): the line controller publishes {"part_id": "P-1"} on
  <topic_root>/<site>/<area>/<line>/<station>/trigger; the verdict and reject carry the part id.

several cameras, one model: a config with a stations: mapping (configs/multi-station.yaml)
  inspector-edge --config configs/multi-station.yaml

live page: http://127.0.0.1:9109/ (edge.live_port); from elsewhere http://HOST:9109/#token=<token>
  with the token in $INSPECTOR_LIVE_TOKEN (edge.live_token_env) or edge.live_token_file.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inspector-edge",
        description="Run the station's inspection as a supervised service: source -> model -> MQTT/JSONL, "
        "with health, metrics and remote commands.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", required=True, type=Path, help="station YAML (see configs/)")
    parser.add_argument(
        "--source", help="camera index, rtsp:// or http:// URL, video file or image folder; overrides source.uri"
    )
    parser.add_argument("--model", help="checkpoint directory or hub id; overrides model.path")
    parser.add_argument("--backend", choices=backend_names(), help="overrides model.backend")
    parser.add_argument(
        "--onnx", dest="onnx_dir", help="exported graphs directory; overrides model.onnx_dir (implies onnxruntime)"
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N; overrides model.device")
    parser.add_argument(
        "--publish",
        metavar="URL",
        help="MQTT broker mqtt[s]://[user[:pass]@]host[:port][/root]; overrides sinks.mqtt's broker",
    )
    parser.add_argument("--loop", action="store_true", help="files: start again at the end (soak tests, demos)")
    parser.add_argument("--pace", action="store_true", help="files: deliver frames at their recorded fps")
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="HTTP port for /metrics and /healthz (0: off; default 9108)",
    )
    parser.add_argument(
        "--metrics-host",
        help="address the HTTP server binds (default 127.0.0.1; 0.0.0.0 for a scraper elsewhere)",
    )
    parser.add_argument("--live-port", type=int, metavar="N", help="HTTP port of the live page (0: off; default 9109)")
    parser.add_argument(
        "--live-host", help="address the live page binds (default 127.0.0.1; elsewhere it needs the token)"
    )
    parser.add_argument(
        "--heartbeat-s",
        type=float,
        metavar="S",
        help="seconds between heartbeats on .../health (default 10)",
    )
    parser.add_argument(
        "--snapshot-dir",
        type=Path,
        help="where the snapshot command writes frames and verdicts (default ./snapshots)",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        metavar="N",
        help="frames buffered between capture and inference for file sources (default 4)",
    )
    parser.add_argument(
        "--drain-timeout-s",
        type=float,
        metavar="S",
        help="at shutdown, wait at most this long for the MQTT outbox to empty (default 10)",
    )
    parser.add_argument(
        "--stall-timeout-s",
        type=float,
        metavar="S",
        help="one frame in inference longer than this counts as a hang: status degraded and no "
        "systemd watchdog ping, so systemd restarts the service (default 60)",
    )
    parser.add_argument(
        "--no-sink",
        action="store_true",
        help="run although no sink is configured (verdicts are dropped; without it the service refuses to start)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Handlers first: a SIGTERM while the model loads must still end in a clean exit.
    stop = threading.Event()
    received: list[str] = []

    def on_signal(number: int, _frame: object) -> None:
        name = signal.Signals(number).name
        if stop.is_set():
            log.warning("%s again: already stopping (the drain is bounded by --drain-timeout-s)", name)
        received.append(name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        return _serve(args, stop, received)
    except InspectorError as error:
        log.error("%s", error)
        return 2


def _serve(args: argparse.Namespace, stop: threading.Event, received: list[str]) -> int:
    from edge.stations import serve_stations
    from inspector.stations import is_multi_station

    if is_multi_station(args.config):  # several cameras, one model (edge/stations.py)
        return serve_stations(args, stop, received)
    # Heavy imports (torch, OpenCV, paho) only once the arguments are known to be sane.
    from edge.line_links import open_line_links
    from edge.metrics import EdgeMetrics
    from edge.supervisor import EdgeService
    from inspector.mqtt.connection import check_connection_or_warn
    from inspector.pipeline import load_inspector, warm_up
    from inspector.runtime import build_sinks, mqtt_settings

    # The same overrides and station runtime as `inspector replay` (inspector/runtime.py).
    overrides = Overrides(
        source=args.source, model=args.model, backend=args.backend, onnx_dir=args.onnx_dir, device=args.device,
        loop=args.loop, pace=args.pace,
    )  # fmt: skip
    config = overrides.apply(load_config(args.config))  # a rejected override is a ConfigError naming the field
    settings = edge_settings(config, args)
    require_a_sink(str(args.config), jsonl=config.sinks.jsonl, mqtt=args.publish or config.sinks.mqtt,
                   no_sink=args.no_sink)  # fmt: skip
    notifier = SystemdNotifier()
    with ExitStack() as stack:
        stack.callback(notifier.close)
        source = source_opener(config.source)()  # a missing file fails here, before the model loads
        stack.callback(source.close)
        mqtt_config = mqtt_settings(config, args.publish, from_config=True)
        if mqtt_config is not None:  # bad credentials or TLS trust fail now; a broker that is down only warns
            check_connection_or_warn(mqtt_config, logger=log)
        links = open_line_links(settings, mqtt_config)  # OPC UA server, Sparkplug node: checked before the model
        if stop.is_set():
            return 0
        notifier.status("loading model")
        inspector = load_inspector(config)  # logs the random-weights warning
        try:
            warm_up(inspector, trial_frame_size(inspector))
        except Exception as error:  # noqa: BLE001 - a pipeline that cannot judge one frame will not judge any
            raise InspectorError(
                f"the pipeline cannot inspect a test frame: {type(error).__name__}: {error}",
                "check tiling.tile against the model and the model section of the config",
            ) from None
        jsonl = config.sinks.jsonl.path if config.sinks.jsonl is not None else None
        station_sinks = build_sinks(config, inspector, jsonl=jsonl, mqtt=mqtt_config)
        sinks, mqtt = station_sinks.sinks + links.sinks_for(config.station.station), station_sinks.mqtt
        if not sinks:
            log.warning("no sink configured (--no-sink): verdicts go nowhere")
        metrics = EdgeMetrics()
        service = EdgeService(
            config, inspector, source, sinks=sinks, mqtt=mqtt, metrics=metrics, notifier=notifier,
            options=service_options(settings, args.config), overrides=overrides, stop_event=stop,
            evidence=settings.evidence, mqtt_config=mqtt_config,
        )  # fmt: skip
        links.attach(service)
        stack.callback(links.close)  # after the station has stopped: NDEATH, the OPC UA server's end
        links.start()
        live = start_live_page(settings, {service.name: service.live_station()})
        if live is not None:
            stack.callback(live.close)
        if settings.metrics_port:
            try:
                server = serve_health(settings, metrics.registry, service.healthz)
            except InspectorError:
                station_sinks.close(0)
                raise
            stack.callback(server.close)
        code = service.run()
        if received:
            log.info("stopped by %s", received[0])
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

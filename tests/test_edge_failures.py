"""The failure policy of a running station (docs/security.md): a station whose every verdict fails must
say so (degraded), stop feeding the systemd watchdog, and past a bound exit 1 for a restart."""

from __future__ import annotations

import threading
from pathlib import Path

from edge.metrics import EdgeMetrics
from edge.options import ServiceOptions
from edge.reload import Overrides
from edge.sdnotify import SystemdNotifier
from edge.supervisor import EdgeService
from inspector.config import parse_config
from inspector.demo_data import write_demo_clip
from inspector.pipeline import build_inspector
from inspector.sinks.jsonl import JsonlSink

from streams import poll

SIZE = (256, 192)


def test_a_station_that_fails_every_frame_degrades_stops_the_watchdog_and_exits_1(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = parse_config({
        "station": {"site": "s", "area": "a", "line": "l", "station": "st"},
        "source": {"uri": str(write_demo_clip(tmp_path, frames=8, size=SIZE, fps=10.0).video), "loop": True},
        # A region of interest outside every frame: each inspection raises (an UNCERTAIN verdict with the error).
        "tiling": {"tile": 256, "overlap": 0.0, "global_view": False, "roi": {"rect": [1000, 1000, 2000, 2000]}},
        "model": {"path": str(tiny_model_dir)},
        "inspection": {"product": "a surface", "defects": {"scratch": {"description": "a line"}}},
    })  # fmt: skip
    sink = JsonlSink(tmp_path / "verdicts.jsonl")
    options = ServiceOptions(tick_s=0.02, heartbeat_s=60, snapshot_dir=tmp_path, degraded_after=3, exit_after=40,
                             spill_file=tmp_path / "undelivered.jsonl")  # fmt: skip
    service = EdgeService(config, build_inspector(config), None, sinks=[sink], mqtt=None, metrics=EdgeMetrics(),
                          notifier=SystemdNotifier(""), options=options, overrides=Overrides())  # fmt: skip
    code: list[int] = []
    runner = threading.Thread(target=lambda: code.append(service.run()))
    runner.start()
    try:
        assert poll(lambda: service.lane.errors >= 3 and service.health().state == "degraded", 60)
        health = service.health()
        assert health.reason is not None and health.reason.startswith("inspection failing")
        assert health.frames.failing_streak >= 3 and not service.watchdog_ok()
        text = service.metrics.registry.collect()
        streak = [s.value for f in text for s in f.samples if s.name == "inspector_failing_streak"]
        assert streak and streak[0] >= 3
    finally:
        runner.join(120)
    assert not runner.is_alive() and code == [1]  # exit_after verdicts in a row failed: restart
    assert service.lane.consecutive_errors >= 40


def test_the_failure_bounds_are_edge_settings() -> None:
    from edge.options import service_options
    from inspector.config import EdgeConfig

    settings = EdgeConfig(degraded_after=2, exit_after=0, sink_retries=0, spill_file=Path("/var/lib/li/spill.jsonl"))
    options = service_options(settings, None)
    assert (options.degraded_after, options.exit_after, options.sink_retries) == (2, 0, 0)
    assert options.spill_file == Path("/var/lib/li/spill.jsonl")
    assert (EdgeConfig().degraded_after, EdgeConfig().exit_after) == (5, 200)

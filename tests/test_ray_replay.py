"""Replay on Ray: a real local Ray (2 CPUs), the tiny random model, real OpenCV decoding of generated clips.

The Ray tests share one Ray start (slow on 2 cores) and keep the number of replays low: one
replay checks parity with a local replay and a bad source; one checks a worker killed
mid-chunk and a resumed output; the CLI tests reuse those outputs (nothing left to judge).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.cluster.plan import output_path, plan_spans
from inspector.cluster.reader import RangeReader, RangeStats
from inspector.commands.replay_ray import publish_sinks
from inspector.config import MqttConfig, load_config
from inspector.demo_data import write_demo_clip
from inspector.sources import open_source

from mosquitto import Mosquitto

FRAMES_A, FRAMES_B = 7, 4


# --------------------------------------------------------------------------- planning (no Ray)


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(0, 40),
    done=st.sets(st.integers(0, 45), max_size=30),
    span=st.integers(1, 9),
    chunk=st.integers(1, 5),
)
def test_plan_chunks_cover_each_missing_frame_once(count: int, done: set[int], span: int, chunk: int) -> None:
    spans = plan_spans("clip.mp4", count, done, span)
    chunks = [c for s in spans for c in s.chunks(chunk)]
    fixed = [i for c in chunks if c.stop is not None for i in range(c.start, c.stop)]
    assert sorted(fixed) == fixed and len(set(fixed)) == len(fixed)  # in order, never twice
    assert set(fixed) == set(range(count)) - done  # every missing frame the container counts
    assert all(s.stop - s.start <= span for s in spans)
    tails = [c for c in chunks if c.stop is None]
    assert len(tails) <= 1 and all(c is chunks[-1] for c in tails)
    beyond = {i for i in done if i >= count}
    finished = count > 0 and set(range(count)) <= done and not beyond
    # The file is read on to its real end unless everything it counts is done already.
    assert (not tails) == finished
    if tails:
        first_past_count = next(i for i in range(count, count + 100) if i not in done)
        assert tails[0].start == first_past_count and all(i < tails[0].start for i in fixed)


def test_output_names_are_readable_stable_and_distinct() -> None:
    one, other = output_path(Path("out"), "/a/clip.mp4"), output_path(Path("out"), "/b/clip.mp4")
    assert one.name.startswith("clip.mp4.") and one.suffix == ".jsonl" and one.parent == Path("out")
    assert one != other and one == output_path(Path("out"), "/a/clip.mp4")
    assert output_path(Path("o"), "frames/*.png").name.startswith("_.png.")


# --------------------------------------------------------------------------- frame ranges (no Ray)


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ray-replay")
    a = write_demo_clip(root / "a", frames=FRAMES_A, size=(192, 128), fps=4.0, seed=3)
    b = write_demo_clip(root / "b", frames=FRAMES_B, size=(192, 128), fps=4.0, seed=5)
    bad = root / "bad" / "clip.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00not a video" * 100)
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").read_text())
    config["tiling"] = {"tile": 64, "overlap": 0.25, "global_view": True}
    config["model"]["path"] = str(tiny_model_dir)
    config["model"]["device"] = "cpu"
    config["inspection"]["explanation"] = "always"
    config["inspection"]["max_explanation_tokens"] = 3
    (root / "station.yaml").write_text(yaml.safe_dump(config))
    return {
        "config": root / "station.yaml",
        "a": a.video,
        "b": b.video,
        "bad": bad,
        "labels": a.labels_path,
        "root": root,
    }


_sequential_cache: dict[str, dict[int, np.ndarray]] = {}


def _sequential(uri: str) -> dict[int, np.ndarray]:
    with open_source(uri) as source:
        return {frame.index: frame.image for frame in source}


@settings(max_examples=25, deadline=None)
@given(ranges=st.lists(st.tuples(st.integers(0, FRAMES_A + 1), st.integers(0, 4)), min_size=1, max_size=4))
def test_frame_ranges_decode_like_a_replay_from_the_start(station, ranges: list[tuple[int, int]]) -> None:
    """Seeks, continuations and the open tail give the very pixels and indices of sequential decoding."""
    uri = str(station["a"])
    truth = _sequential_cache.setdefault(uri, _sequential(uri))
    reader = RangeReader(uri)
    try:
        for start, length in ranges:
            stop = None if length == 0 else start + length
            stats = RangeStats()
            got = list(reader.frames(start, stop, stats))
            expected = [i for i in sorted(truth) if i >= start and (stop is None or i < stop)]
            assert [f.index for f in got] == expected
            assert all(np.array_equal(f.image, truth[f.index]) for f in got)
            assert stats.ended == (stop is None or stop > FRAMES_A)
    finally:
        reader.close()


def test_image_folder_ranges_skip_unreadable_images(tmp_path: Path) -> None:
    for index in range(5):
        cv2.imwrite(str(tmp_path / f"frame_{index}.png"), np.full((32, 48, 3), index * 40, np.uint8))
    (tmp_path / "frame_2.png").write_bytes(b"broken")
    reader = RangeReader(str(tmp_path))
    stats = RangeStats()
    frames = list(reader.frames(1, 4, stats))
    assert [f.index for f in frames] == [1, 3] and stats.corrupt == 1 and not stats.ended
    assert int(frames[1].image[0, 0, 0]) == 120
    assert [f.index for f in reader.frames(3, None, RangeStats())] == [3, 4]


# --------------------------------------------------------------------------- on Ray


def _comparable(payload: dict) -> dict:
    """A verdict without what legitimately differs between two runs: timings, message id, capture time."""
    payload = dict(payload)
    payload.pop("timings"), payload.pop("message_id")
    payload["source"] = {k: v for k, v in payload["source"].items() if k != "captured_at"}
    return payload


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _keyed(paths: list[Path]) -> dict[tuple[str, int], dict]:
    keyed: dict[tuple[str, int], dict] = {}
    for path in paths:
        for line in _lines(path):
            key = (line["source"]["id"], line["source"]["frame_index"])
            assert key not in keyed, f"{key} written twice"
            keyed[key] = _comparable(line)
    return keyed


@pytest.fixture(scope="module")
def reference(station, tmp_path_factory: pytest.TempPathFactory):
    """A local replay of both clips: the verdicts a cluster replay must reproduce."""
    from inspector.pipeline import load_inspector
    from inspector.replay import ReplaySummary, replay_frames
    from inspector.sinks.jsonl import JsonlSink

    out = tmp_path_factory.mktemp("local") / "results.jsonl"
    inspector = load_inspector(load_config(station["config"]))
    sink, summary = JsonlSink(out), ReplaySummary()
    for clip in ("a", "b"):
        with open_source(str(station[clip])) as source:
            replay_frames(source, inspector, [sink], summary=summary)
    sink.close()
    return {"out": out, "verdicts": _keyed([out]), "summary": summary}


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def parity_run(station, ray_local, tmp_path_factory: pytest.TempPathFactory):
    from inspector.cluster import ClusterOptions, replay_on_ray

    out = tmp_path_factory.mktemp("cluster")
    sources = [str(station["a"]), str(station["bad"]), str(station["b"])]
    # Spans of 3 frames: clip a (7 frames) is cut into ranges that both workers share.
    options = ClusterOptions(span_frames=3, frames_in_flight=2)
    warnings: list[str] = []
    result = replay_on_ray(sources, load_config(station["config"]), out, options, warn=warnings.append)
    assert len(warnings) == 1 and "RANDOM" in warnings[0]  # said once, not once per worker
    return out, result


@pytest.mark.slow
def test_cluster_verdicts_equal_a_local_replay(station, reference, parity_run) -> None:
    out, result = parity_run
    assert result.workers == 2
    assert sorted(result.outputs) == sorted([str(station["a"]), str(station["b"])])
    assert all(path.parent == out for path in result.outputs.values())
    # One JSONL per source, holding that source's frames only.
    for source_id, path in result.outputs.items():
        assert {line["source"]["id"] for line in _lines(path)} == {source_id}
    assert _keyed(list(result.outputs.values())) == reference["verdicts"]
    local = reference["summary"]
    assert result.summary.frames == local.frames == FRAMES_A + FRAMES_B
    assert result.summary.verdicts == local.verdicts and result.summary.outcomes == local.outcomes
    assert result.summary.random_weights and result.duplicates_dropped == 0
    # The 7 frames of clip a, in spans of 3, went to both workers.
    assert {worker for worker, source in result.spread if source == str(station["a"])} == {0, 1}


@pytest.mark.slow
def test_bad_source_is_reported_and_the_others_finish(station, parity_run) -> None:
    _, result = parity_run
    assert list(result.failed) == [str(station["bad"])]
    assert "bad/clip.mp4" in result.failed[str(station["bad"])]
    assert result.summary.frames == FRAMES_A + FRAMES_B


@pytest.fixture(scope="module")
def crash_run(station, reference, ray_local, tmp_path_factory: pytest.TempPathFactory):
    """Clip a half done already (plus a line cut short); a worker dies in the middle of a chunk of clip b."""
    from inspector.cluster import ClusterOptions, output_path, replay_on_ray
    from inspector.cluster.worker import FrameJudge

    root = tmp_path_factory.mktemp("crash")
    out = root / "out"
    out.mkdir()
    a_id = str(station["a"])
    kept = [line for line in reference["out"].read_text().splitlines() if json.loads(line)["source"]["id"] == a_id][:3]
    resumed = output_path(out, a_id)
    resumed.write_text("\n".join(kept) + '\n{"schema": "line-inspector/frame-ver')
    marker, b_id = root / "crashed", str(station["b"])

    class DiesOnce(FrameJudge):
        """Kills its process on frame 3 of clip b, the first time only: Ray restarts it and retries."""

        def judge_frame(self, frame):
            if frame.source_id == b_id and frame.index == 3 and not marker.exists():
                marker.touch()
                os._exit(1)
            return super().judge_frame(frame)

    # Chunks of 2 frames: frame 2 of b was judged in the dying call too, and must not be lost or doubled.
    options = ClusterOptions(span_frames=4, frames_in_flight=4, max_restarts=2)
    sources = [a_id, b_id]
    config = load_config(station["config"])
    mqtt = config.sinks.model_copy(update={"mqtt": MqttConfig(outbox=root / "outbox.sqlite")})
    config = config.model_copy(update={"sinks": mqtt})
    with Mosquitto(root / "broker") as broker:
        subscriber = _Subscriber(broker.port)
        try:
            publisher = publish_sinks(broker.url, config)  # what --publish builds: the driver's durable outbox
            result = replay_on_ray(sources, config, out, options, worker_class=DiesOnce, extra_sinks=publisher)
            published = subscriber.wait_for(result.summary.frames)
        finally:
            subscriber.stop()
    return {"result": result, "kept": kept, "resumed": resumed, "marker": marker, "published": published}


class _Subscriber:
    """Collects every verdict published under the topic root (a real paho client on the test broker)."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as paho

        self.port = port
        self.messages: list[dict] = []
        self.barriers: set[str] = set()
        self.arrived = threading.Condition()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe("inspector/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK from the test broker"

    def _on_message(self, _c, _u, message) -> None:
        with self.arrived:
            if message.topic.endswith("/verdict"):
                self.messages.append(json.loads(message.payload))
            elif message.topic.startswith("inspector/test-barrier/"):
                self.barriers.add(message.topic)
            self.arrived.notify_all()

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[dict]:
        """The verdicts once ``count`` arrived and a barrier published after them came back too.

        Call it after the publisher closed (its outbox drained: the broker holds every send,
        doubles included). Mosquitto delivers to a subscriber in the order it received, so any
        doubled verdict arrives before the barrier: no fixed wait for one "right behind".
        """
        import paho.mqtt.client as paho

        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.messages) >= count, timeout_s), (len(self.messages), count)
        barrier = f"inspector/test-barrier/{uuid.uuid4().hex}"
        sender = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        sender.connect("127.0.0.1", self.port)
        sender.loop_start()
        try:
            sender.publish(barrier, b"barrier", qos=1).wait_for_publish(10)
        finally:
            sender.disconnect()
            sender.loop_stop()
        with self.arrived:
            assert self.arrived.wait_for(lambda: barrier in self.barriers, timeout_s), "the barrier never came back"
            return list(self.messages)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.slow
def test_killed_worker_loses_nothing_and_doubles_nothing(reference, crash_run) -> None:
    result = crash_run["result"]
    assert crash_run["marker"].exists(), "the worker never died: the test proves nothing"
    # _keyed fails on any frame written twice; equality means none lost and none changed.
    assert _keyed(list(result.outputs.values())) == reference["verdicts"]
    assert not result.failed


@pytest.mark.slow
def test_resume_skips_frames_already_written(crash_run) -> None:
    result, kept = crash_run["result"], crash_run["kept"]
    assert result.summary.skipped_done == len(kept)
    assert result.summary.frames == FRAMES_A + FRAMES_B - len(kept)
    # The frames done before were kept byte for byte (same message ids), not judged again.
    assert crash_run["resumed"].read_text().splitlines()[: len(kept)] == kept


@pytest.mark.slow
def test_publish_goes_out_once_per_verdict_despite_the_dead_worker(crash_run) -> None:
    result = crash_run["result"]
    published = [(m["source"]["id"], m["source"]["frame_index"]) for m in crash_run["published"]]
    assert len(published) == len(set(published)) == result.summary.frames
    assert set(published) == set(result.summary.outcomes)


# --------------------------------------------------------------------------- the command line


def _cli(station, out: Path, *extra: str) -> list[str]:
    sources = [str(station["a"]), str(station["bad"]), str(station["b"])]
    return ["replay", *sources, "--config", str(station["config"]), "--out", str(out), "--no-progress", *extra]


@pytest.mark.slow
def test_cli_ray_resumes_a_finished_replay_and_names_the_bad_source(station, parity_run, capsys, monkeypatch) -> None:
    from inspector.cli import main

    monkeypatch.setenv("COLUMNS", "300")  # rich wraps table cells at the terminal width

    out, _ = parity_run
    before = {path: path.read_text() for path in out.iterdir()}
    assert main(_cli(station, out, "--ray", "--labels", str(station["labels"]))) == 1  # a source failed
    err = capsys.readouterr().err
    assert "already in output (skipped)" in err and str(FRAMES_A + FRAMES_B) in err
    assert "bad/clip.mp4" in err and "Traceback" not in err
    assert "precision / recall" in err  # label metrics from the per-source files, as a local replay gives
    assert {path: path.read_text() for path in out.iterdir()} == before  # nothing judged again


def test_cli_ray_out_must_be_a_folder(station, tmp_path: Path, capsys) -> None:
    from inspector.cli import main

    assert main(_cli(station, tmp_path / "results.jsonl", "--ray")) == 2
    err = capsys.readouterr().err
    assert "--out is a folder" in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_ray_model_that_cannot_load_names_the_fix(station, ray_local, tmp_path: Path, capsys) -> None:
    from inspector.cli import main

    args = _cli(station, tmp_path / "out", "--ray", "--ray-workers", "1", "--model", str(tmp_path / "no-model"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no-model" in err and "inspector model tiny" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_frame_that_kills_every_worker_stops_with_a_clear_error(station, ray_local, tmp_path: Path) -> None:
    """Restarts spent (none allowed here) and no worker left: an InspectorError, the output still valid."""
    from inspector.cluster import ClusterOptions, replay_on_ray
    from inspector.cluster.worker import FrameJudge
    from inspector.errors import InspectorError

    b_id = str(station["b"])

    class AlwaysDies(FrameJudge):
        def judge_frame(self, frame):
            if frame.index == 2:
                os._exit(1)
            return super().judge_frame(frame)

    options = ClusterOptions(workers=1, span_frames=2, frames_in_flight=2, max_restarts=0)
    with pytest.raises(InspectorError, match="every Ray inspector worker died"):
        replay_on_ray([b_id], load_config(station["config"]), tmp_path, options, worker_class=AlwaysDies)
    written = [line["source"]["frame_index"] for line in _lines(output_path(tmp_path, b_id))]
    assert written == [0, 1]  # what came back before the death is kept; a rerun resumes at frame 2


def test_cli_ray_bad_knob_is_a_clear_error(station, tmp_path: Path, capsys) -> None:
    from inspector.cli import main

    assert main(_cli(station, tmp_path / "out", "--ray", "--ray-span-frames", "0")) == 2
    err = capsys.readouterr().err
    assert "--ray-span-frames must be at least 1" in err and "Traceback" not in err

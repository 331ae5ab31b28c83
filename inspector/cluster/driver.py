"""The driver of a cluster replay: plan what is left, feed Ray actors chunks, write each verdict exactly once.

The driver owns every output: one JSONL per source (and the MQTT outbox with --publish).
Workers only judge and return verdicts, so a worker that dies mid-chunk costs a retry,
never a half-written file, and a retried chunk's verdicts are written once: the driver
keeps the (source, frame index) pairs already written, from disk on start and as it goes.

Scheduling is Ray core (actors, ``ray.wait``) rather than Ray Data: frame-level resume
and exactly-once writes live in the driver anyway, and a file's spans stick to one actor
so it decodes on from where it stopped instead of seeking per chunk.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspector.cluster.plan import Chunk, Span, output_path, plan_spans
from inspector.cluster.worker import ChunkResult, FrameJudge, SourceProbe, WorkerReady, probe_source
from inspector.config import StationFile
from inspector.errors import InspectorError
from inspector.payloads.verdict import FrameVerdict
from inspector.replay import ReplaySummary
from inspector.runtime import ErrorPolicy
from inspector.sinks.base import Sink
from inspector.sinks.jsonl import JsonlSink, read_outcomes

log = logging.getLogger(__name__)

# A chunk that took down this many workers is not handed to another one: its source is reported failed.
CHUNK_MAX_ATTEMPTS = 3
FAILURES_KEPT = ErrorPolicy().keep  # as many failed frames listed in the summary as a local replay


@dataclass(frozen=True)
class ClusterOptions:
    """How a replay uses Ray. ``None`` fields are decided from the cluster's resources."""

    address: str | None = None  # None: start a local Ray on this machine
    workers: int | None = None  # default: one per GPU (when the model runs on CUDA), else one per cpus_per_worker
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None  # default: 1 when the model runs on CUDA or TensorRT, else 0
    span_frames: int = 256  # frames of a file one worker takes at a time: long files are spread over workers
    frames_in_flight: int = 8  # per worker, the bound on frames submitted and not yet returned (backpressure)
    max_restarts: int = 3  # a dead worker is restarted this many times; its unfinished calls are retried
    local_cpus: int | None = None  # local Ray only: CPUs it may use (default: all)

    def __post_init__(self) -> None:
        for name in ("span_frames", "frames_in_flight"):
            if getattr(self, name) < 1:
                raise InspectorError(f"--ray-{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.workers is not None and self.workers < 1:
            raise InspectorError(f"--ray-workers must be at least 1, not {self.workers}")
        if self.cpus_per_worker <= 0:
            raise InspectorError(f"--ray-cpus-per-worker must be positive, not {self.cpus_per_worker}")

    @property
    def chunk_frames(self) -> int:
        # Two chunks per worker in flight: one being judged, one queued, so the actor never waits.
        return max(1, self.frames_in_flight // 2)


@dataclass
class ClusterReplay:
    """The outcome: the same summary a local replay gives, where each source went, what failed."""

    summary: ReplaySummary
    outputs: dict[str, Path] = field(default_factory=dict)  # source id -> its JSONL
    failed: dict[str, str] = field(default_factory=dict)  # source as given -> the problem
    workers: int = 0
    duplicates_dropped: int = 0  # verdicts of retried calls already written: dropped, never written twice
    # (worker number, source id) -> frames that worker returned: how the work was spread
    spread: Counter[tuple[int, str]] = field(default_factory=Counter)


@contextmanager
def ray_session(options: ClusterOptions) -> Iterator[Any]:
    """Connect to ``options.address`` or start a local Ray; leave an already connected session alone."""
    try:
        import ray
    except ImportError:
        raise InspectorError(
            "--ray needs Ray, which is not installed",
            "pip install 'line-inspector[cluster]' (or: pip install 'ray[default]>=2.52')",
        ) from None
    if ray.is_initialized():
        yield ray
        return
    try:
        if options.address:
            ray.init(address=options.address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(
                num_cpus=options.local_cpus or os.cpu_count(),
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = options.address or "a local Ray"
        raise InspectorError(
            f"cannot start or reach the Ray cluster at {where}: {error}",
            "start one with `ray start --head` and pass its address (--ray HOST:6379), or pass --ray alone",
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def replay_on_ray(
    uris: Sequence[str],
    config: StationFile,
    out_dir: Path,
    options: ClusterOptions,
    *,
    extra_sinks: Callable[[dict[str, Any]], list[Sink]] | None = None,
    on_planned: Callable[[int], None] | None = None,
    on_verdicts: Callable[[int, ReplaySummary], None] | None = None,
    warn: Callable[[str], None] | None = None,
    worker_class: type[FrameJudge] = FrameJudge,
) -> ClusterReplay:
    """Judge every frame of ``uris`` not yet in its JSONL under ``out_dir``, on Ray actors.

    ``extra_sinks`` gets the workers' pipeline description (for an MQTT birth message) and
    returns more sinks the driver publishes every verdict to. ``on_planned`` gets the number
    of frames to judge (container counts), ``on_verdicts`` the count of newly written ones,
    ``warn`` the model's warning (random or demo weights) once the workers have loaded it.
    A source that cannot be read is reported in ``failed``; the others go on.
    """
    with ray_session(options) as ray, ExitStack() as stack:
        result = ClusterReplay(ReplaySummary())
        probes = _probe(ray, uris)
        plans: list[Span] = []
        done: dict[str, set[int]] = {}
        for probe in probes:
            if probe.error is not None:
                log.error("%s", probe.error)
                result.failed[probe.uri] = probe.error
                continue
            assert probe.source_id is not None
            if probe.source_id in done:
                continue  # the same source named twice: judged once
            path = output_path(out_dir, probe.source_id)
            result.outputs[probe.source_id] = path
            done[probe.source_id] = {i for (s, i) in read_outcomes(path) if s == probe.source_id}
            result.summary.skipped_done += len(done[probe.source_id])
            plans.extend(plan_spans(probe.uri, probe.frame_count, done[probe.source_id], options.span_frames))
        if on_planned:
            on_planned(sum(s.stop - s.start for s in plans))
        if not plans:
            return result
        jsonl = {source_id: JsonlSink(path) for source_id, path in result.outputs.items()}
        for sink in jsonl.values():
            stack.callback(sink.close)
        actors = _start_workers(ray, config, options, len(plans), worker_class)
        # Free the workers' CPUs/GPUs now, not whenever their handles are collected.
        stack.callback(lambda: [ray.kill(actor) for actor in actors])
        result.workers = len(actors)
        warning = result.summary.model_warning = _wait_ready(ray, actors)
        if warning and warn is not None:
            warn(warning)
        description = ray.get(actors[0].describe.remote())
        result.summary.random_weights = bool(description["random_weights"])
        sinks: list[Sink] = extra_sinks(description) if extra_sinks is not None else []
        for sink in sinks:
            stack.callback(sink.close)

        def write(verdict: FrameVerdict) -> None:
            key = verdict.source.frame_index
            seen = done[verdict.source.id]
            if key in seen:
                result.duplicates_dropped += 1
                return
            seen.add(key)
            jsonl[verdict.source.id].publish(verdict)
            for sink in sinks:
                sink.publish(verdict)
            result.summary.record(verdict, keep=FAILURES_KEPT)

        _Scheduler(ray, actors, plans, options, result, write, on_verdicts).run()
        return result


def _wait_ready(ray: Any, actors: list[Any]) -> str | None:
    """Wait until every worker has loaded its model (a model that cannot load is an InspectorError).

    Returns the model's warning (random or demo weights), if any.
    """
    from ray.exceptions import RayActorError

    try:
        answers: list[WorkerReady] = ray.get([actor.ready.remote() for actor in actors])
    except RayActorError as error:
        last = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise InspectorError(
            f"a Ray inspector worker could not start: {last}",
            "see the worker logs (`ray logs` or /tmp/ray/session_latest/logs), e.g. for GPU memory",
        ) from None
    for answer in answers:
        if answer.problem is not None:
            raise InspectorError(f"on a Ray worker: {answer.problem}", answer.hint)
    return answers[0].warning


def _probe(ray: Any, uris: Sequence[str]) -> list[SourceProbe]:
    """Open every source on the cluster (as its workers will), in parallel; bad ones come back as errors."""
    remote = ray.remote(num_cpus=0.5, max_retries=2)(probe_source)
    return ray.get([remote.remote(str(uri)) for uri in uris])


def _start_workers(
    ray: Any, config: StationFile, options: ClusterOptions, spans: int, worker_class: type[FrameJudge]
) -> list[Any]:
    resources = ray.cluster_resources()
    device = config.model.device
    on_gpu = device.startswith("cuda") or config.model.backend == "tensorrt"
    on_gpu = on_gpu or (device == "auto" and resources.get("GPU", 0) > 0)
    gpus = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if on_gpu else 0.0)
    if options.workers is not None:
        count = options.workers
    elif gpus > 0:
        count = int(resources.get("GPU", 0) // gpus)
        if count == 0:
            raise InspectorError(
                f"the model runs on {device} but the Ray cluster has no GPU",
                "start the nodes on GPU machines, or run the model on CPU (model.device: cpu)",
            )
    else:
        count = max(1, int(resources.get("CPU", 1) // options.cpus_per_worker))
    # Actors beyond what the cluster holds would wait forever, and so would the chunks given to them.
    capacity = resources.get("CPU", 0) // options.cpus_per_worker
    if gpus > 0:
        capacity = min(capacity, resources.get("GPU", 0) // gpus)
    if capacity < 1:
        raise InspectorError(
            f"no node of the Ray cluster can hold a worker of {options.cpus_per_worker} CPU and {gpus} GPU",
            "lower --ray-cpus-per-worker, or add nodes (`ray start --address HEAD:6379` on each)",
        )
    if count > capacity:
        log.warning("the cluster holds %d worker(s), not the %d asked for", int(capacity), count)
    count = max(1, min(count, int(capacity), spans))
    if gpus > 0 and device.startswith("cuda:"):
        # Ray gives each actor its own CUDA_VISIBLE_DEVICES: inside it the GPU is always cuda:0.
        config = config.model_copy(update={"model": config.model.model_copy(update={"device": "cuda"})})
    remote = ray.remote(
        num_cpus=options.cpus_per_worker,
        num_gpus=gpus,
        max_restarts=options.max_restarts,
        max_task_retries=options.max_restarts,
    )(worker_class)
    log.info("starting %d inspector worker(s) (%s CPU, %s GPU each)", count, options.cpus_per_worker, gpus)
    return [remote.remote(config) for _ in range(count)]


class _Scheduler:
    """Keeps every live actor busy with at most ``frames_in_flight`` frames; retries on dead actors."""

    def __init__(
        self,
        ray: Any,
        actors: list[Any],
        spans: list[Span],
        options: ClusterOptions,
        result: ClusterReplay,
        write: Callable[[FrameVerdict], None],
        on_verdicts: Callable[[int, ReplaySummary], None] | None,
    ) -> None:
        self.ray = ray
        self.actors: dict[int, Any] = dict(enumerate(actors))
        self.spans = deque(spans)
        self.options = options
        self.result = result
        self.write = write
        self.on_verdicts = on_verdicts
        self.queues: dict[int, deque[Chunk]] = {i: deque() for i in self.actors}
        self.in_flight: dict[int, int] = {i: 0 for i in self.actors}
        self.retry: deque[Chunk] = deque()
        self.attempts: dict[Chunk, int] = {}
        self.pending: dict[Any, tuple[int, Chunk]] = {}
        self.per_worker = max(1, options.frames_in_flight // options.chunk_frames)

    def run(self) -> None:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

        self._fill()
        while self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1)
            ref = ready[0]
            worker, chunk = self.pending.pop(ref)
            self.in_flight[worker] -= 1
            try:
                outcome: ChunkResult = self.ray.get(ref)
            except RayTaskError as error:
                # An exception inside judge() that is not a source problem: a bug or a bad frame.
                cause = error.cause if getattr(error, "cause", None) is not None else error
                self._fail(chunk.uri, f"worker error on frames {_span_text(chunk)}: {type(cause).__name__}: {cause}")
            except ActorUnavailableError:
                # Restarting or briefly unreachable, not gone: the same worker gets the chunk again.
                (self.queues[worker] if worker in self.actors else self.retry).appendleft(chunk)
            except (ActorDiedError, RayActorError) as error:
                self._worker_lost(worker, chunk, error)
            else:
                self._accept(worker, outcome)
            self._fill()

    def _accept(self, worker: int, outcome: ChunkResult) -> None:
        if outcome.error is not None:
            self._fail(outcome.uri, outcome.error)
        self.result.summary.skipped_corrupt += outcome.corrupt
        for verdict in outcome.verdicts[:1]:
            self.result.spread[(worker, verdict.source.id)] += len(outcome.verdicts)
        for verdict in outcome.verdicts:
            self.write(verdict)
        if self.on_verdicts:
            self.on_verdicts(len(outcome.verdicts), self.result.summary)

    def _fail(self, uri: str, problem: str) -> None:
        log.error("%s: %s", uri, problem)
        self.result.failed.setdefault(uri, problem)

    def _worker_lost(self, worker: int, chunk: Chunk, error: BaseException) -> None:
        """Ray gave up on the actor (restarts spent): hand its chunks to the others, unless a chunk kills them all."""
        self.attempts[chunk] = self.attempts.get(chunk, 1) + 1
        if worker in self.actors:
            log.warning("inspector worker %d is gone after its restarts: %s", worker, error)
            del self.actors[worker]
            self.retry.extend(self.queues.pop(worker))
        if self.attempts[chunk] > CHUNK_MAX_ATTEMPTS:
            self._fail(chunk.uri, f"frames {_span_text(chunk)} took down {CHUNK_MAX_ATTEMPTS} workers: {error}")
        else:
            self.retry.appendleft(chunk)
        if not self.actors and (self.retry or self.spans):
            raise InspectorError(
                "every Ray inspector worker died; the verdicts written so far are kept and a rerun resumes",
                "see the worker logs (`ray logs` or /tmp/ray/session_latest/logs) for the cause, e.g. out of memory",
            )

    def _fill(self) -> None:
        for worker, actor in list(self.actors.items()):
            while self.in_flight[worker] < self.per_worker:
                chunk = self._next_chunk(worker)
                if chunk is None:
                    break
                self.pending[actor.judge.remote(chunk.uri, chunk.start, chunk.stop)] = (worker, chunk)
                self.in_flight[worker] += 1

    def _next_chunk(self, worker: int) -> Chunk | None:
        while True:
            chunk = self._take(worker)
            # A source that failed (vanished, unreadable mid-file) is not read again.
            if chunk is None or chunk.uri not in self.result.failed:
                return chunk

    def _take(self, worker: int) -> Chunk | None:
        if self.retry:
            return self.retry.popleft()
        queue = self.queues[worker]
        if not queue and self.spans:
            queue.extend(self.spans.popleft().chunks(self.options.chunk_frames))
        if not queue:
            self._steal(worker)
        return queue.popleft() if queue else None

    def _steal(self, worker: int) -> None:
        """Nothing left to hand out: take the back half of the busiest worker's queue (it keeps the front)."""
        victim = self.queues[max(self.queues, key=lambda i: len(self.queues[i]))]
        # The open tail stays with the victim: it reads on from the victim's position without a seek.
        tail = [victim.pop()] if victim and victim[-1].stop is None else []
        taken = [victim.pop() for _ in range(len(victim) // 2)]
        victim.extend(tail)
        self.queues[worker].extend(reversed(taken))


def _span_text(chunk: Chunk) -> str:
    return f"{chunk.start}-{'end' if chunk.stop is None else chunk.stop - 1}"

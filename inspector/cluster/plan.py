"""What a cluster replay has left to do: the frames not yet in each source's JSONL, cut into spans and chunks.

A *span* is a contiguous frame range one worker takes at a time (a long file becomes many
spans, so every worker gets a share of it); a *chunk* is the few frames of one actor call
(the unit of retry and of backpressure). The last span of a source is open-ended: a
container's frame count is an estimate, and the reader stops where the file really ends.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Chunk:
    """The frames ``[start, stop)`` of one actor call; ``stop=None``: on to the end of the file."""

    uri: str
    start: int
    stop: int | None


@dataclass(frozen=True, slots=True)
class Span:
    """``[start, stop)`` of one source; ``open_tail``: then read on to the file's real end."""

    uri: str
    start: int
    stop: int
    open_tail: bool = False

    def chunks(self, size: int) -> list[Chunk]:
        chunks = [Chunk(self.uri, begin, min(begin + size, self.stop)) for begin in range(self.start, self.stop, size)]
        if self.open_tail:
            # The same worker reads on from where the last chunk stopped: no seek past the count.
            chunks.append(Chunk(self.uri, self.stop, None))
        return chunks


def output_path(out_dir: Path, source_id: str) -> Path:
    """``OUT/<file or folder name>.<8 hex of sha1(source id)>.jsonl``: readable, and unique per source.

    The hash keeps two ``clip.mp4`` from different folders apart, and is stable across runs,
    so a restarted replay finds its files again.
    """
    name = Path(source_id.rstrip("/")).name or "source"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]
    digest = hashlib.sha1(source_id.encode("utf-8")).hexdigest()[:8]
    return Path(out_dir) / f"{name}.{digest}.jsonl"


def plan_spans(uri: str, frame_count: int | None, done: Iterable[int], span_frames: int) -> list[Span]:
    """The spans of ``uri`` still to judge, each at most ``span_frames`` long plus the open tail.

    Frames in ``done`` are left out. The container's ``frame_count`` is trusted as far as a
    finished source goes (all its frames done: nothing to read), but the last span reads on
    to the real end of the file (from the first frame past the count not done), so an
    under-counting container loses no frame; a frame written before is dropped by the driver.
    """
    done_set = set(done)
    count = frame_count or 0
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for index in range(count):
        if index in done_set:
            if start is not None:
                runs.append((start, index))
                start = None
        elif start is None:
            start = index
    if start is not None:
        runs.append((start, count))
    spans = [
        Span(uri, begin, min(begin + span_frames, stop))
        for run_start, stop in runs
        for begin in range(run_start, stop, span_frames)
    ]
    beyond = any(index >= count for index in done_set)
    if not beyond and count and not spans:
        return spans  # every counted frame is done: finished
    tail = count
    while tail in done_set:
        tail += 1
    if spans and spans[-1].stop == tail:
        # The same worker reads on past the count from where its last chunk stopped: no seek.
        spans[-1] = Span(uri, spans[-1].start, tail, open_tail=True)
    else:
        spans.append(Span(uri, tail, tail, open_tail=True))
    return spans

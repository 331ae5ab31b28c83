"""JSON-lines sink: one verdict per line, appended and flushed, so a crash loses at most a partial line."""

from __future__ import annotations

import json
import os
from pathlib import Path

from inspector.payloads.verdict import FrameVerdict


class JsonlSink:
    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_last_line(self.path)
        self._file = self.path.open("a", encoding="utf-8")
        self._fsync = fsync

    def publish(self, verdict: FrameVerdict) -> None:
        self._file.write(verdict.to_json() + "\n")
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    def close(self, timeout_s: float = 5.0) -> None:
        self._file.close()


def _drop_partial_last_line(path: Path) -> None:
    """A killed writer can leave a line without its newline; cut it so appends stay valid JSONL."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as handle:
        handle.truncate(keep)


def read_outcomes(path: Path) -> dict[tuple[str, int], str]:
    """(source id, frame index) -> verdict for every complete line in ``path``: replay resumes past them."""
    outcomes: dict[tuple[str, int], str] = {}
    if not Path(path).exists():
        return outcomes
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            try:
                payload = json.loads(line)
                source = payload["source"]
                outcomes[(source["id"], int(source["frame_index"]))] = str(payload["verdict"])
            except (ValueError, KeyError, TypeError):
                continue  # a partial or foreign line: the frame will be judged again
    return outcomes

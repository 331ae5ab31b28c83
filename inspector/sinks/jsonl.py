"""JSON-lines sink: one verdict per line, appended and flushed, so a crash loses at most a partial line.

Opening touches only the file's tail (a partial last line left by a killed writer is cut), so
a restart after weeks of verdicts costs no more than one after a minute. With ``max_bytes``
the file is rotated by size, logrotate style: ``verdicts.jsonl`` -> ``verdicts.jsonl.1`` ->
``.2`` ... up to ``keep`` files (the oldest is removed). ``read_outcomes`` (replay's resume:
frames already judged are skipped) reads the rotated files too.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from inspector.payloads.verdict import FrameVerdict

log = logging.getLogger(__name__)

# The tail read on open: enough for any verdict line, grown when a line is longer.
_TAIL_BYTES = 64 * 1024


class JsonlSink:
    def __init__(self, path: Path, *, fsync: bool = False, max_bytes: int = 0, keep: int = 5) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.keep = max(1, keep)  # the current file is never simply deleted
        _drop_partial_last_line(self.path)
        self._file = self.path.open("a", encoding="utf-8")
        self._size = self._file.tell()
        self._fsync = fsync

    def publish(self, verdict: FrameVerdict) -> None:
        line = verdict.to_json() + "\n"
        size = len(line.encode("utf-8"))
        if self.max_bytes and self._size and self._size + size > self.max_bytes:
            self._rotate()
        self._file.write(line)
        self._file.flush()
        self._size += size
        if self._fsync:
            os.fsync(self._file.fileno())

    def close(self, timeout_s: float = 5.0) -> None:
        self._file.close()

    def _rotate(self) -> None:
        """``path`` -> ``path.1``, ``path.1`` -> ``path.2`` ...; the file beyond ``keep`` is removed."""
        self._file.close()
        for index in range(self.keep, 0, -1):
            older = rotated_name(self.path, index)
            if not older.exists():
                continue
            if index == self.keep:
                older.unlink()
            else:
                os.replace(older, rotated_name(self.path, index + 1))
        os.replace(self.path, rotated_name(self.path, 1))
        log.info("%s rotated at %d bytes (keeping %d)", self.path, self._size, self.keep)
        self._file = self.path.open("a", encoding="utf-8")
        self._size = 0


def rotated_name(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def rotated_files(path: Path) -> list[Path]:
    """``path`` and its rotated predecessors, oldest first (``path.N`` ... ``path.1``, ``path``)."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)$")
    older = []
    if path.parent.is_dir():
        for entry in path.parent.iterdir():
            match = pattern.match(entry.name)
            if match:
                older.append((int(match.group(1)), entry))
    return [p for _, p in sorted(older, reverse=True)] + ([path] if path.exists() else [])


def _drop_partial_last_line(path: Path) -> None:
    """A killed writer can leave a line without its newline; cut it so appends stay valid JSONL.
    Reads from the end only, ``_TAIL_BYTES`` at a time, until the last newline."""
    if not path.is_file():
        return
    with path.open("r+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end == 0:
            return
        handle.seek(end - 1)
        if handle.read(1) == b"\n":
            return
        position = end
        while position > 0:
            start = max(0, position - _TAIL_BYTES)
            handle.seek(start)
            chunk = handle.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                handle.truncate(start + newline + 1)
                return
            position = start
        handle.truncate(0)  # one partial line and nothing else


def read_outcomes(path: Path) -> dict[tuple[str, int], str]:
    """(source id, frame index) -> verdict for every complete line in ``path`` and its rotated files:
    replay resumes past them."""
    outcomes: dict[tuple[str, int], str] = {}
    for file in rotated_files(Path(path)):
        with file.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    payload = json.loads(line)
                    source = payload["source"]
                    outcomes[(source["id"], int(source["frame_index"]))] = str(payload["verdict"])
                except (ValueError, KeyError, TypeError):
                    continue  # a partial or foreign line: the frame will be judged again
    return outcomes

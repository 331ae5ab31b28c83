"""The JSONL sink: opening reads the tail only, rotation by size, resume across rotated files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.payloads.verdict import FrameVerdict, ModelRef, SourceRef, StationRef
from inspector.sinks.jsonl import JsonlSink, read_outcomes, rotated_files

REPO = Path(__file__).resolve().parents[1]
STATION = StationRef(site="s", area="a", line="l", station="st", camera="cam0")
MODEL = ModelRef(id="tiny", backend="torch", precision="float32", random_weights=True)


def verdict(index: int, source: str = "cam0") -> FrameVerdict:
    return FrameVerdict(
        station=STATION, model=MODEL, verdict="OK", confidence=0.9,
        source=SourceRef(id=source, frame_index=index, captured_at=datetime.now(UTC)),
    )  # fmt: skip


def test_opening_a_huge_file_reads_only_its_tail(tmp_path: Path) -> None:
    """A 3 GiB file (sparse: no disk used) with a partial last line, opened in a process allowed 1 GiB of
    memory: reading the whole file would fail; reading its tail cuts the partial line and appends after."""
    path = tmp_path / "weeks.jsonl"
    with path.open("wb") as handle:
        handle.truncate(3 * 1024**3)
        handle.seek(0, 2)
        handle.write(b'\n{"complete": true}\n{"partial": tr')
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))
        from pathlib import Path
        from inspector.sinks.jsonl import JsonlSink
        JsonlSink(Path({str(path)!r})).close()
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    with path.open("rb") as handle:
        handle.seek(-40, 2)
        assert handle.read().endswith(b'\n{"complete": true}\n')  # the partial line is gone, nothing else


def test_a_file_of_one_partial_line_is_emptied_and_appends_stay_valid(tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    path.write_bytes(b'{"cut": ' + b"x" * 200_000)  # longer than one tail read
    sink = JsonlSink(path)
    sink.publish(verdict(1))
    sink.close()
    assert [json.loads(line)["source"]["frame_index"] for line in path.read_text().splitlines()] == [1]


@settings(max_examples=25, deadline=None)
@given(count=st.integers(1, 60), max_lines=st.integers(1, 7), keep=st.integers(1, 4))
def test_rotation_by_size_keeps_whole_lines_and_resume_sees_every_kept_file(
    tmp_path_factory, count: int, max_lines: int, keep: int
) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("rot")
    path = folder / "verdicts.jsonl"
    line_bytes = len(verdict(0).to_json()) + 1
    sink = JsonlSink(path, max_bytes=line_bytes * max_lines + line_bytes // 2, keep=keep)
    for index in range(count):
        sink.publish(verdict(index))
    sink.close()
    files = rotated_files(path)
    assert len(files) <= keep + 1 and files[-1] == path
    assert all(f.stat().st_size <= line_bytes * max_lines + line_bytes // 2 for f in files)
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    indices = [v["source"]["frame_index"] for v in lines]
    # Oldest first, in order, the newest always there; only whole files beyond `keep` are gone.
    assert indices == list(range(count - len(indices), count))
    assert len(indices) == min(count, (keep + 1) * max_lines) or len(indices) > keep * max_lines
    assert set(read_outcomes(path)) == {("cam0", i) for i in indices}  # replay --out skips all of them


def test_a_restarted_sink_goes_on_rotating_from_the_current_size(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    line_bytes = len(verdict(0).to_json()) + 1
    for start in (0, 3):  # two runs of the service
        sink = JsonlSink(path, max_bytes=line_bytes * 4, keep=3)
        for index in range(start, start + 3):
            sink.publish(verdict(index))
        sink.close()
    assert [len(f.read_text().splitlines()) for f in rotated_files(path)] == [4, 2]
    assert sorted(i for _, i in read_outcomes(path)) == list(range(6))

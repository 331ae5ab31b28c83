"""Frame sources against real files and real sockets: videos written with cv2.VideoWriter,
images written with cv2.imwrite, streams served by http.server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inspector.config import ReconnectConfig
from inspector.errors import SourceError
from inspector.sources import (
    LiveSource,
    VideoFileSource,
    open_source,
    redact_uri,
    source_kind,
)

from streams import MjpegCamera, poll

N_FRAMES = 20
FPS = 10.0
SIZE = (160, 120)
FAST = ReconnectConfig(initial_s=0.05, max_s=0.2)


def level(i: int) -> int:
    return 10 * i + 5


def write_video(path: Path, fourcc: str, n: int = N_FRAMES, fps: float = FPS) -> Path:
    """Frame i has mean grey level ``level(i)`` over a fixed noise texture (so JPEG frames are not tiny)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, SIZE)
    assert writer.isOpened(), f"this OpenCV build cannot write {fourcc}"
    noise = np.random.default_rng(0).integers(-20, 21, (SIZE[1], SIZE[0], 1))
    for i in range(n):
        writer.write(np.clip(level(i) + noise, 0, 255).astype(np.uint8).repeat(3, axis=2))
    writer.release()
    return path


def frame_number(image: np.ndarray) -> int:
    """Inverse of ``level``: which written frame this decoded image is."""
    return int(round((float(image.mean()) - 5) / 10))


wait_until = poll


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {"mp4": write_video(root / "clip.mp4", "mp4v"), "avi": write_video(root / "clip.avi", "MJPG")}


# --------------------------------------------------------------------------- video files


@pytest.mark.parametrize("kind", ["mp4", "avi"])
def test_video_file_yields_every_frame_in_order(videos: dict[str, Path], kind: str) -> None:
    with open_source(videos[kind]) as source:
        assert isinstance(source, VideoFileSource)
        assert not source.is_live and source.healthy
        assert source.fps == pytest.approx(FPS) and source.frame_count == N_FRAMES
        frames = list(source)
    assert [f.index for f in frames] == list(range(N_FRAMES))
    assert [frame_number(f.image) for f in frames] == list(range(N_FRAMES))
    for frame in frames:
        assert frame.image.dtype == np.uint8 and frame.image.shape == (SIZE[1], SIZE[0], 3)
        assert frame.captured_at.tzinfo is not None and frame.captured_at.utcoffset() == UTC.utcoffset(None)
        assert frame.source_id == str(videos[kind])
    assert [f.meta["pos_ms"] for f in frames] == pytest.approx([1000 * i / FPS for i in range(N_FRAMES)], abs=1)
    assert source.stats.frames_read == N_FRAMES and source.stats.frames_skipped_corrupt == 0
    assert not source.stats.truncated and not source.healthy  # closed


def test_loop_restarts_and_index_keeps_increasing(videos: dict[str, Path]) -> None:
    wanted = 2 * N_FRAMES + 5
    with open_source(str(videos["avi"]), loop=True) as source:
        frames = [frame for _, frame in zip(range(wanted), source)]
    assert [f.index for f in frames] == list(range(wanted))
    assert [frame_number(f.image) for f in frames] == [i % N_FRAMES for i in range(wanted)]
    assert [f.meta["loop"] for f in frames] == [i // N_FRAMES for i in range(wanted)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pace_sleeps_to_the_recorded_fps(videos: dict[str, Path]) -> None:
    clock = FakeClock()
    with VideoFileSource(videos["mp4"], pace=True, clock=clock, sleep=clock.sleep) as source:
        assert len(list(source)) == N_FRAMES
    assert clock.sleeps == pytest.approx([1 / FPS] * (N_FRAMES - 1))


def test_pace_does_not_burst_after_a_slow_consumer(videos: dict[str, Path]) -> None:
    clock = FakeClock()
    with VideoFileSource(videos["mp4"], pace=True, clock=clock, sleep=clock.sleep) as source:
        for frame in source:
            if frame.index == 5:
                clock.now += 2.0  # the consumer stalls for 20 frame intervals
    # No sleep is owed for the stalled slot, and no later frame is released early to catch up.
    assert clock.sleeps == pytest.approx([1 / FPS] * (N_FRAMES - 2))


def test_no_pacing_by_default(videos: dict[str, Path]) -> None:
    clock = FakeClock()
    with VideoFileSource(videos["mp4"], clock=clock, sleep=clock.sleep) as source:
        list(source)
    assert clock.sleeps == []


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(tmp_path / "nope.mp4")
    assert "does not exist" in caught.value.problem and "nope.mp4" in caught.value.problem
    assert caught.value.hint


def test_random_bytes_named_mp4_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(1).bytes(20_000))
    with pytest.raises(SourceError) as caught:
        open_source(bad)
    assert "cannot open video file" in caught.value.problem and "corrupt" in caught.value.problem


def test_empty_video_file_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(SourceError):
        open_source(empty)


def test_truncated_avi_yields_leading_frames_then_ends(videos: dict[str, Path], tmp_path: Path) -> None:
    data = videos["avi"].read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with open_source(cut) as source:
        frames = list(source)
    got = len(frames)
    assert 0 < got < N_FRAMES
    assert [f.index for f in frames] == list(range(got))
    assert [frame_number(f.image) for f in frames] == list(range(got))
    assert source.stats.truncated
    assert source.stats.frames_read == got
    assert source.stats.frames_missing == N_FRAMES - got


def test_truncated_mp4_without_its_index_is_a_clear_error(videos: dict[str, Path], tmp_path: Path) -> None:
    # mp4v via OpenCV writes the 'moov' index last: half a file cannot be opened at all.
    data = videos["mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="truncated"):
        open_source(cut)


def test_corrupt_frame_mid_stream_is_skipped_and_counted(videos: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(videos["avi"].read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"]  # JPEG SOI per frame
    assert len(starts) == N_FRAMES
    bad_frame = 7
    begin, end = starts[bad_frame] + 300, starts[bad_frame + 1] - 300
    data[begin:end] = np.random.default_rng(2).bytes(end - begin)
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    with open_source(damaged) as source:
        frames = list(source)
    expected = [i for i in range(N_FRAMES) if i != bad_frame]
    assert [f.index for f in frames] == expected
    assert [frame_number(f.image) for f in frames] == expected
    assert source.stats.frames_skipped_corrupt == 1 and not source.stats.truncated


# --------------------------------------------------------------------------- images


def write_images(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for number, value in ((1, 10), (2, 20), (10, 100)):
        assert cv2.imwrite(str(folder / f"img_{number}.png"), np.full((40, 60, 3), value, np.uint8))
    assert cv2.imwrite(str(folder / "img_3.png"), np.full((40, 60), 30, np.uint8))  # greyscale
    (folder / "img_0.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("ignored")


def test_image_folder_in_natural_order_skips_unreadable(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs")
    with open_source(tmp_path / "imgs") as source:
        frames = list(source)
    names = [Path(str(f.meta["path"])).name for f in frames]
    assert names == ["img_1.png", "img_2.png", "img_3.png", "img_10.png"]
    assert [f.index for f in frames] == [1, 2, 3, 4]  # img_0.jpg took position 0 and was skipped
    assert [int(f.image.mean()) for f in frames] == [10, 20, 30, 100]
    assert all(f.image.shape == (40, 60, 3) and f.image.dtype == np.uint8 for f in frames)
    assert source.stats.frames_skipped_corrupt == 1 and source.stats.frames_read == 4
    assert source.fps is None and source.frame_count == 5


def test_glob_and_loop(tmp_path: Path) -> None:
    write_images(tmp_path)
    with open_source(str(tmp_path / "img_*.png"), loop=True) as source:
        frames = [f for _, f in zip(range(10), source)]
    assert [f.index for f in frames] == list(range(10))
    assert [int(f.image.mean()) for f in frames] == [10, 20, 30, 100] * 2 + [10, 20]


def test_empty_folder_and_empty_glob_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="contains no images"):
        open_source(tmp_path / "empty")
    with pytest.raises(SourceError, match="matched nothing"):
        open_source(str(tmp_path / "*.png"))
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(SourceError, match="none of them images"):
        open_source(str(tmp_path / "*.txt"))


def test_unsupported_scheme_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="unsupported scheme"):
        open_source("ftp://user:secret@host/clip.mp4")
    with pytest.raises(SourceError) as caught:
        open_source("ftp://user:secret@host/clip.mp4")
    assert "secret" not in str(caught.value)


# --------------------------------------------------------------------------- pure helpers


@given(
    scheme=st.sampled_from(["rtsp", "rtsps", "http", "https"]),
    user=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8),
    password=st.text(
        st.characters(codec="ascii", categories=["L", "N"], include_characters="@:!$"), min_size=3, max_size=12
    ),
    port=st.integers(1, 65535),
    path=st.from_regex(r"/[a-z0-9/_.]{0,12}", fullmatch=True),
)
def test_redact_uri_strips_credentials(scheme: str, user: str, password: str, port: int, path: str) -> None:
    redacted = redact_uri(f"{scheme}://{user}:{password}@cam.local:{port}{path}")
    assert redacted == f"{scheme}://cam.local:{port}{path}"


def test_redact_uri_hides_secret_query_values() -> None:
    assert redact_uri("http://cam/video.cgi?user=admin&password=hunter2&res=hd") == (
        "http://cam/video.cgi?user=***&password=***&res=hd"
    )
    assert redact_uri("rtsp://cam:554/stream1?channel=1") == "rtsp://cam:554/stream1?channel=1"
    assert redact_uri("/data/clip.mp4") == "/data/clip.mp4"


@given(st.integers(0, 10_000))
def test_camera_indices_are_cameras(index: int) -> None:
    assert source_kind(index) == "camera"
    assert source_kind(str(index)) == "camera"


def test_source_kind_classifies(tmp_path: Path) -> None:
    assert source_kind("RTSP://cam/x") == "stream"
    assert source_kind("https://cam/x.mjpg") == "stream"
    assert source_kind(tmp_path) == "folder"
    assert source_kind(str(tmp_path / "*.png")) == "glob"
    assert source_kind(tmp_path / "a.png") == "image"
    assert source_kind(tmp_path / "a.mkv") == "video"


# --------------------------------------------------------------------------- live sources


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def MjpegServer(port: int, grey: int) -> MjpegCamera:  # noqa: N802 - reads as the camera it starts
    """A camera sending frames of one grey level (the test reads the level back)."""
    return MjpegCamera(np.full((SIZE[1], SIZE[0], 3), grey, np.uint8), port=port)


@pytest.fixture
def file_server(videos: dict[str, Path]) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(videos["mp4"].parent))
    )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("name", ["clip.avi", "clip.mp4"])
def test_http_url_reads_a_served_video(file_server: int, name: str) -> None:
    url = f"http://viewer:s3cret@127.0.0.1:{file_server}/{name}"
    with open_source(url, reconnect=FAST) as source:
        assert isinstance(source, LiveSource) and source.is_live
        assert source.source_id == f"http://127.0.0.1:{file_server}/{name}"
        frame = source.read(timeout_s=15)
        assert frame is not None
        assert frame.image.shape == (SIZE[1], SIZE[0], 3) and 0 <= frame_number(frame.image) < N_FRAMES
        assert frame.source_id == source.source_id


def test_http_stream_that_goes_away_reconnects() -> None:
    server = MjpegServer(0, grey=50)
    port = server.port
    source = open_source(f"http://127.0.0.1:{port}/video.mjpg", reconnect=FAST)
    try:
        first = source.read(timeout_s=15)
        assert first is not None and abs(first.image.mean() - 50) < 3
        assert source.healthy and source.stats.reconnects == 0
        server.stop()
        assert wait_until(lambda: not source.healthy), "losing the stream must show as unhealthy"
        server = MjpegServer(port, grey=150)
        assert wait_until(lambda: (f := source.read(0.1)) is not None and abs(f.image.mean() - 150) < 3)
        assert source.healthy and source.stats.reconnects >= 1
    finally:
        source.close()
        server.stop()


def test_unreachable_rtsp_is_a_clear_error() -> None:
    port = free_port()  # bound then released: nothing listens there
    with pytest.raises(SourceError) as caught:
        open_source(f"rtsp://admin:pw@127.0.0.1:{port}/x")
    assert "unreachable" in caught.value.problem and f"127.0.0.1:{port}" in caught.value.problem
    assert "pw" not in str(caught.value)


def test_server_that_answers_no_video_is_a_clear_error() -> None:
    with socket.socket() as silent:  # accepts connections, never speaks RTSP
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(SourceError, match="no video stream"):
            LiveSource(f"rtsp://127.0.0.1:{port}/x", open_timeout_s=0.5, read_timeout_s=0.5)


def test_missing_camera_is_a_clear_error() -> None:
    index = next(i for i in range(63, 0, -1) if not os.path.exists(f"/dev/video{i}"))
    with pytest.raises(SourceError, match=f"camera {index} cannot be opened"):
        open_source(str(index))


def test_wait_for_first_starts_unhealthy_and_closes_promptly() -> None:
    source = open_source(f"rtsp://127.0.0.1:{free_port()}/x", reconnect=FAST, wait_for_first=True)
    assert isinstance(source, LiveSource) and not source.healthy
    assert source.read(timeout_s=0.3) is None
    closer = threading.Timer(0.3, source.close)
    closer.start()
    assert list(source) == []  # iteration wakes up and ends once closed
    closer.join()
    assert not source._thread.is_alive()


def test_live_hook_reconnects_when_the_stream_ends(videos: dict[str, Path]) -> None:
    # A video file opened as a live source "ends" after 20 frames, like a dropped stream.
    source = LiveSource(str(videos["avi"]), "test-live", reconnect=FAST)
    try:
        assert wait_until(lambda: source.stats.reconnects >= 2)
        indices = [source.read(timeout_s=15).index for _ in range(3)]  # type: ignore[union-attr]
        assert indices == sorted(set(indices))
    finally:
        source.close()
    assert not source._thread.is_alive()


def test_live_keeps_only_the_freshest_frame(videos: dict[str, Path]) -> None:
    source = LiveSource(str(videos["avi"]), "test-live", reconnect=FAST)
    try:
        assert wait_until(lambda: source.stats.frames_read >= 10)
        frame = source.read(timeout_s=15)
        assert frame is not None and frame.index >= 9  # not the oldest frame: the stale ones were dropped
        assert source.stats.dropped_stale >= 9
    finally:
        source.close()
    s = source.stats
    # Every decoded frame was either handed out, dropped as stale, or is the one still waiting.
    assert s.frames_read - s.dropped_stale in (1, 2)


def test_closing_from_another_thread_ends_iteration(videos: dict[str, Path]) -> None:
    source = LiveSource(str(videos["mp4"]), "test-live", reconnect=FAST)
    seen = 0
    for _ in source:
        seen += 1
        if seen == 3:
            threading.Thread(target=source.close).start()
    assert seen >= 3 and not source.healthy


def test_live_reader_failure_ends_iteration_with_an_error(videos: dict[str, Path]) -> None:
    """A reader thread that dies must not leave the consumer waiting forever on an 'unhealthy' source."""
    source = LiveSource(str(videos["avi"]), "test-live", reconnect=FAST)

    def broken_publish(image: np.ndarray) -> None:
        raise RuntimeError("injected fault")

    source._publish = broken_publish  # type: ignore[method-assign]
    with source, pytest.raises(SourceError, match="reader thread stopped"):
        for _ in source:
            pass
    assert not source.healthy

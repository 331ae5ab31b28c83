"""Evidence pictures (edge/evidence.py): JPEGs with the boxes drawn, the path on the verdict, retention."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from edge.evidence import EvidenceStore
from inspector.config import EvidenceConfig
from inspector.frames import Frame
from inspector.payloads.verdict import Defect, FrameVerdict, ModelRef, SourceRef, StationRef, TileVerdict
from inspector.render import PREDICTED

STATION = StationRef(site="s", area="a", line="l", station="st", camera="c")
MODEL = ModelRef(id="tiny", backend="torch", precision="float32", random_weights=True)


def frame(index: int = 3) -> Frame:
    image = np.full((240, 320, 3), 128, np.uint8)
    return Frame(image, "cam0", index, datetime.now(UTC), part_id="P-9")


def verdict(result: str, defects: list[Defect] | None = None) -> FrameVerdict:
    tiles = [
        TileVerdict(index=0, bbox=(0, 0, 160, 240), probabilities={"ok": 0.1, "scratch": 0.9}),
        TileVerdict(index=1, bbox=(160, 0, 320, 240), probabilities={"ok": 0.9, "scratch": 0.1}),
    ]
    return FrameVerdict(
        station=STATION, model=MODEL, verdict=result, confidence=0.9, defects=defects or [], tiles=tiles,
        source=SourceRef(id="cam0", frame_index=3, captured_at=datetime.now(UTC), part_id="P-9"),
    )  # fmt: skip


def is_predicted_red(pixel: np.ndarray) -> bool:
    return bool(abs(int(pixel[2]) - PREDICTED[2]) < 40 and pixel[0] < 90 and pixel[1] < 90)


def test_an_ng_verdict_gets_a_jpeg_with_its_box_drawn_and_the_path(tmp_path: Path) -> None:
    store = EvidenceStore(EvidenceConfig(dir=tmp_path / "ev"))
    defect = Defect(class_name="scratch", confidence=0.87, bbox=(40, 60, 200, 200), tiles=[0])
    out = store.attach(frame(), verdict("NG", [defect]))
    assert out.evidence is not None
    path = Path(out.evidence)
    assert path.parent == (tmp_path / "ev").resolve() and path.name.endswith("_NG_P-9.jpg")
    image = cv2.imread(str(path))
    assert image.shape == (240, 320, 3)
    # the box's bottom edge (away from the caption) is drawn in the predicted colour; the middle stays grey
    assert is_predicted_red(image[198, 120]) and not is_predicted_red(image[130, 120])
    assert not list(path.parent.glob("*.partial"))


def test_ok_gets_no_picture_and_uncertain_does(tmp_path: Path) -> None:
    store = EvidenceStore(EvidenceConfig(dir=tmp_path))
    assert store.attach(frame(), verdict("OK")).evidence is None
    assert store.attach(frame(), verdict("UNCERTAIN")).evidence is not None
    assert len(list(tmp_path.glob("*.jpg"))) == 1


def test_the_heatmap_goes_beside_the_frame(tmp_path: Path) -> None:
    store = EvidenceStore(EvidenceConfig(dir=tmp_path, heatmap=True))
    out = store.attach(frame(), verdict("UNCERTAIN"))
    image = cv2.imread(out.evidence)
    assert image.shape == (240, 640, 3)
    left, right = image[120, 320 + 80].astype(int), image[120, 320 + 240].astype(int)
    assert np.abs(left - right).sum() > 60  # p(scratch) 0.9 vs 0.1: different JET colours


def test_retention_by_count_removes_the_oldest(tmp_path: Path) -> None:
    store = EvidenceStore(EvidenceConfig(dir=tmp_path, max_files=3))
    paths = []
    for index in range(5):
        paths.append(Path(store.attach(frame(index), verdict("UNCERTAIN")).evidence))
        os.utime(paths[-1], (time.time() - 100 + index, time.time() - 100 + index))
    store.prune()
    assert sorted(tmp_path.glob("*.jpg")) == sorted(paths[2:])


def test_retention_by_age_removes_old_pictures(tmp_path: Path) -> None:
    store = EvidenceStore(EvidenceConfig(dir=tmp_path, max_age_s=3600))
    old = Path(store.attach(frame(1), verdict("UNCERTAIN")).evidence)
    new = Path(store.attach(frame(2), verdict("UNCERTAIN")).evidence)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert store.prune() == 1
    assert not old.exists() and new.exists()


def test_a_disk_that_refuses_loses_the_picture_not_the_verdict(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = EvidenceStore(EvidenceConfig(dir=blocker / "ev"))
    out = store.attach(frame(), verdict("UNCERTAIN"))
    assert out.evidence is None and store.failures == 1


def test_the_last_ng_picture_goes_to_the_snapshot_publisher(tmp_path: Path) -> None:
    published: list[bytes] = []
    store = EvidenceStore(EvidenceConfig(dir=tmp_path, mqtt_snapshot=True), publish_snapshot=published.append)
    store.attach(frame(), verdict("UNCERTAIN"))
    store.attach(frame(), verdict("NG", [Defect(class_name="scratch", confidence=0.9, bbox=(0, 0, 50, 50), tiles=[0])]))
    assert len(published) == 1 and published[0][:2] == b"\xff\xd8"  # a JPEG


def test_the_writer_draws_off_the_callers_thread_and_a_full_queue_drops_never_blocks(tmp_path: Path) -> None:
    import threading

    from edge.evidence_worker import EvidenceWriter

    threads: list[str] = []
    store = EvidenceStore(EvidenceConfig(dir=tmp_path, mqtt_snapshot=True),
                          publish_snapshot=lambda jpeg: threads.append(threading.current_thread().name))  # fmt: skip
    writer = EvidenceWriter(store, queue_size=2)
    ng = verdict("NG", [Defect(class_name="scratch", confidence=0.9, bbox=(0, 0, 50, 50), tiles=[0])])
    # The writer is not running yet: two pictures wait, the third finds the queue full and is dropped.
    out = [writer.attach(frame(index), ng) for index in range(3)]
    assert [o.evidence is not None for o in out] == [True, True, False] and writer.dropped == 1
    assert store.saved == 0 and not any(tmp_path.glob("*.jpg"))  # nothing drawn on the caller's thread
    assert writer.attach(frame(9), verdict("OK")).evidence is None
    writer.start()
    writer.close(30)
    assert store.saved == 2 and threads == ["evidence", "evidence"]
    for o in out[:2]:
        assert o.evidence is not None and cv2.imread(o.evidence) is not None  # the promised path holds the JPEG

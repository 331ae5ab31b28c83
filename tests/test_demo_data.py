"""The demo clip: decoded back with OpenCV and checked against its own labels."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector import cli
from inspector.demo_data import (
    CLASSES,
    HELDOUT_SURFACE,
    TRAIN_SURFACES,
    DemoClip,
    load_labels,
    render_clean_frame,
    write_demo_clip,
    write_demo_set,
)
from inspector.errors import SourceError
from inspector.sources import open_source

FRAMES, SIZE, FPS, SEED = 12, (320, 240), 6.0, 5


def decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    images = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        images.append(image)
    cap.release()
    return images


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> DemoClip:
    return write_demo_clip(tmp_path_factory.mktemp("demo"), frames=FRAMES, size=SIZE, fps=FPS, seed=SEED)


@pytest.fixture(scope="module")
def decoded(clip: DemoClip) -> list[np.ndarray]:
    return decode(clip.video)


def test_clip_decodes_to_the_requested_frames(clip: DemoClip, decoded: list[np.ndarray]) -> None:
    assert clip.video.name == "clip.mp4" and clip.labels_path.name == "labels.json"
    assert not list(clip.video.parent.glob("*.partial.*"))
    assert len(decoded) == FRAMES
    assert all(image.shape == (SIZE[1], SIZE[0], 3) for image in decoded)
    with open_source(clip.video) as source:  # and through the pipeline's own reader
        assert source.fps == pytest.approx(FPS)
        assert sum(1 for _ in source) == FRAMES


def test_labels_are_consistent(clip: DemoClip) -> None:
    labels = load_labels(clip.labels_path)
    assert labels == clip.labels
    assert (labels["version"], labels["clip"], labels["width"], labels["height"], labels["fps"]) == (
        1,
        "clip.mp4",
        SIZE[0],
        SIZE[1],
        FPS,
    )
    assert labels["classes"] == list(CLASSES)
    frames = labels["frames"]
    assert [f["index"] for f in frames] == list(range(FRAMES))
    ng = [f for f in frames if f["label"] == "NG"]
    assert len(ng) == FRAMES // 2
    for frame in frames:
        assert (frame["label"] == "NG") == bool(frame["defects"])
        for defect in frame["defects"]:
            x0, y0, x1, y1 = defect["bbox"]
            assert 0 <= x0 < x1 <= SIZE[0] and 0 <= y0 < y1 <= SIZE[1]
    assert {d["class"] for f in ng for d in f["defects"]} == set(CLASSES)


def assert_defects_where_labelled(clip: DemoClip, decoded: list[np.ndarray]) -> None:
    """Every labelled box holds drawn pixels, and nothing changed outside the boxes (OK frames: nowhere)."""
    for frame, image in zip(clip.labels["frames"], decoded, strict=True):
        clean = render_clean_frame(clip.labels, frame["index"])
        diff = np.abs(image.astype(np.int16) - clean.astype(np.int16)).max(axis=2)
        outside = np.ones(diff.shape, bool)
        for defect in frame["defects"]:
            x0, y0, x1, y1 = defect["bbox"]
            outside[y0:y1, x0:x1] = False
            changed = (diff[y0:y1, x0:x1] > 40).mean()
            assert changed > 0.02, f"frame {frame['index']}: {defect['class']} barely visible in its bbox"
        # Elsewhere only compression noise: the labels cover every drawn defect, and OK frames are clean.
        assert (diff[outside] > 40).mean() < 0.001, f"frame {frame['index']}: pixels changed outside the labels"


def test_defect_pixels_differ_from_the_clean_surface(clip: DemoClip, decoded: list[np.ndarray]) -> None:
    assert_defects_where_labelled(clip, decoded)


def test_frames_move_like_a_conveyor(clip: DemoClip) -> None:
    first, second = render_clean_frame(clip.labels, 0), render_clean_frame(clip.labels, 1)
    assert not np.array_equal(first, second)


def test_same_seed_same_clip_other_seed_other_clip(clip: DemoClip, decoded: list[np.ndarray], tmp_path: Path) -> None:
    again = write_demo_clip(tmp_path / "again", frames=FRAMES, size=SIZE, fps=FPS, seed=SEED)
    assert again.labels == clip.labels
    assert all(np.array_equal(a, b) for a, b in zip(decode(again.video), decoded, strict=True))
    other = write_demo_clip(tmp_path / "other", frames=FRAMES, size=SIZE, fps=FPS, seed=SEED + 1)
    assert other.labels["frames"] != clip.labels["frames"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": 0}, "frames"),
        ({"size": (321, 240)}, "even"),
        ({"size": (32, 32)}, "64"),
        ({"fps": 0.0}, "fps"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        write_demo_clip(tmp_path, **kwargs)


# --------------------------------------------------------------------------- load_labels


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.pop("width"), "width"),
        (lambda d: d["frames"][0].update(label="BAD"), "label"),
        (lambda d: d["frames"].append(copy.deepcopy(d["frames"][0])), "appears twice"),
        (lambda d: next(f for f in d["frames"] if f["defects"]).update(defects=[]), "needs at least one defect"),
        (lambda d: next(f for f in d["frames"] if f["defects"])["defects"][0].update({"class": "dent"}), "dent"),
        (lambda d: next(f for f in d["frames"] if f["defects"])["defects"][0].update(bbox=[1, 2, 3]), "bbox"),
    ],
)
def test_malformed_labels_are_clear_errors(clip: DemoClip, tmp_path: Path, mutate: Any, message: str) -> None:
    data = copy.deepcopy(clip.labels)
    mutate(data)
    with pytest.raises(SourceError, match=message) as caught:
        load_labels(_write(tmp_path, data))
    assert caught.value.hint


def test_unreadable_labels_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        load_labels(tmp_path / "missing.json")
    (tmp_path / "labels.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SourceError, match="not valid JSON"):
        load_labels(tmp_path / "labels.json")
    with pytest.raises(SourceError, match="top level"):
        load_labels(_write(tmp_path, [1, 2]))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bbox=st.lists(st.integers(-5, 340), min_size=4, max_size=4))
def test_any_bbox_is_accepted_exactly_when_inside_the_frame(clip: DemoClip, tmp_path: Path, bbox: list[int]) -> None:
    data = copy.deepcopy(clip.labels)
    next(f for f in data["frames"] if f["defects"])["defects"][0]["bbox"] = bbox
    x0, y0, x1, y1 = bbox
    inside = 0 <= x0 < x1 <= SIZE[0] and 0 <= y0 < y1 <= SIZE[1]
    path = _write(tmp_path, data)
    if inside:
        assert load_labels(path)["frames"] == data["frames"]
    else:
        with pytest.raises(SourceError, match="bbox"):
            load_labels(path)


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def only_demo_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real main(), registering just this command: other commands' imports are not under test here.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("demo_data",))


def test_cli_writes_the_default_clip(
    only_demo_command: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert cli.main(["demo-data", str(out), "--train-clips", "0"]) == 0
    assert not (out / "train").exists() and not (out / "heldout").exists()
    labels = load_labels(out / "labels.json")
    assert (labels["width"], labels["height"], labels["fps"], len(labels["frames"])) == (1280, 720, 8.0, 24)
    images = decode(out / "clip.mp4")
    assert len(images) == 24 and images[0].shape == (720, 1280, 3)
    printed = capsys.readouterr().out
    assert "clip.mp4" in printed and "labels.json" in printed and "12 NG" in printed


def test_cli_options(only_demo_command: None, tmp_path: Path) -> None:
    argv = ["demo-data", str(tmp_path), "--frames", "4", "--seed", "2", "--size", "256x128", "--fps", "5",
            "--train-clips", "2", "--train-frames", "3", "--heldout-frames", "5",
            "--calibration-frames", "6"]  # fmt: skip
    assert cli.main(argv) == 0
    train = [load_labels(tmp_path / "train" / f"clip-0{n}" / "labels.json") for n in (0, 1)]
    heldout = load_labels(tmp_path / "heldout" / "labels.json")
    assert [len(t["frames"]) for t in train] == [3, 3] and len(heldout["frames"]) == 5
    assert len(load_labels(tmp_path / "calibration" / "labels.json")["frames"]) == 6
    labels = load_labels(tmp_path / "labels.json")
    assert (labels["width"], labels["height"], labels["fps"], labels["seed"], len(labels["frames"])) == (
        256,
        128,
        5.0,
        2,
        4,
    )


@pytest.mark.parametrize("argv", [["--size", "big"], ["--size", "255x128"], ["--frames", "0"], ["--fps", "-1"]])
def test_cli_rejects_bad_options(
    only_demo_command: None, tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["demo-data", str(tmp_path), *argv])
    assert caught.value.code == 2
    assert "demo-data" in capsys.readouterr().err
    assert not (tmp_path / "clip.mp4").exists()


def test_cli_help_explains_what_it_writes(only_demo_command: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["demo-data", "--help"])
    text = capsys.readouterr().out
    assert "clip.mp4" in text and "labels.json" in text and "--seed" in text


def test_the_held_out_clip_has_a_seed_and_a_surface_no_training_clip_has(tmp_path: Path) -> None:
    written = write_demo_set(tmp_path, frames=2, size=(128, 96), seed=4, train_clips=4, train_frames=2,
                             heldout_frames=4)  # fmt: skip
    assert written.heldout is not None and len(written.train) == 4
    train_seeds = {c.labels["seed"] for c in written.train}
    train_surfaces = {c.labels["surface"] for c in written.train}
    assert len(train_seeds) == 4 and written.clip.labels["seed"] not in train_seeds
    assert written.heldout.labels["seed"] not in train_seeds | {written.clip.labels["seed"]}
    assert train_surfaces == {f"skimage.data.{s}" for s in TRAIN_SURFACES}
    assert written.heldout.labels["surface"] == f"skimage.data.{HELDOUT_SURFACE}"
    assert written.heldout.labels["surface"] not in train_surfaces
    # Each clip renders back from its own labels (surface included), its defects exactly where they say.
    for clip in [*written.train, written.heldout]:
        assert_defects_where_labelled(clip, decode(clip.video))


def test_the_calibration_clip_is_neither_training_nor_held_out(tmp_path: Path) -> None:
    written = write_demo_set(tmp_path, frames=2, size=(128, 96), seed=3, train_clips=3, train_frames=4,
                             heldout_frames=4, calibration_frames=4)  # fmt: skip
    assert written.calibration is not None and written.heldout is not None
    assert written.calibration.video == tmp_path / "calibration" / "clip.mp4"
    others = [written.clip, *written.train, written.heldout]
    assert written.calibration.labels["seed"] not in {c.labels["seed"] for c in others}
    # Not one of its frames is a frame of another clip (same surface as the held-out clip, other pixels).
    calibration_frames = decode(written.calibration.video)
    for clip in others:
        for frame in decode(clip.video):
            assert all(np.abs(frame.astype(int) - c).mean() > 1 for c in calibration_frames)
    # Its clean frames render back from its labels, turned as they were written.
    labels = written.calibration.labels
    upright = {key: value for key, value in labels.items() if key != "turned"}
    for frame in labels["frames"]:
        drawn = calibration_frames[frame["index"]].astype(int)
        error = np.abs(render_clean_frame(labels, frame["index"]) - drawn).mean()
        assert error < np.abs(render_clean_frame(upright, frame["index"]) - drawn).mean()


def test_no_calibration_clip_when_asked_for_none(tmp_path: Path) -> None:
    written = write_demo_set(tmp_path, frames=2, size=(128, 96), train_clips=1, train_frames=2, heldout_frames=2,
                             calibration_frames=0)  # fmt: skip
    assert written.calibration is None and not (tmp_path / "calibration").exists()


def test_an_unknown_surface_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="surface"):
        write_demo_clip(tmp_path, frames=2, size=(128, 96), surface="marble")

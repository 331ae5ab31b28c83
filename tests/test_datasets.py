"""Labelled data sets: formats detected and loaded, classes mapped, bad labels named, splits by group."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from datasets_helpers import DEFECTS, station_yaml, write_class_folders, write_coco
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.config import load_config
from inspector.datasets import (
    DatasetError,
    detect_format,
    fit_tile,
    iter_frames,
    labelled_tiles,
    load_dataset,
    load_datasets,
    split_dataset,
    to_bgr_uint8,
)
from inspector.demo_data import write_demo_clip
from inspector.tiling import TilePlanner

MAP = {"Scratch": "scratch", "Spot": "spot", "Crack": "crack"}


@pytest.fixture()
def station(tmp_path: Path):
    return load_config(station_yaml(tmp_path / "station.yaml"))


@pytest.mark.parametrize("layout", ["roboflow", "cvat"])
def test_coco_loads_with_mapped_categories(tmp_path: Path, station, layout: str) -> None:
    json_path = write_coco(tmp_path / "coco", layout=layout)
    data = json.loads(json_path.read_text())
    for target in (tmp_path / "coco", json_path):
        dataset = load_dataset(target, station, MAP)
        assert dataset.classes == ("ok", *DEFECTS)
        assert len(dataset) == len(data["images"])
        boxes = [b for item in dataset.images for b in item.boxes]
        assert len(boxes) == len(data["annotations"])
        ann = data["annotations"][0]
        x, y, w, h = ann["bbox"]
        item = next(i for i in dataset.images if i.boxes)
        assert item.boxes[0].bbox == (x, y, x + w, y + h)
        names = {c["id"]: c["name"] for c in data["categories"]}
        assert item.boxes[0].class_name == MAP[names[ann["category_id"]]]
        assert item.load().shape == (96, 160, 3)


def test_coco_unmapped_category_is_named(tmp_path: Path, station) -> None:
    json_path = write_coco(tmp_path / "coco")
    with pytest.raises(DatasetError, match=r"category 'Scratch' \(\d annotation\(s\)\) is not one of") as info:
        load_dataset(json_path, station)
    assert "--map" in str(info.value)
    with pytest.raises(DatasetError, match="'dent' is not one of the station's classes"):
        load_dataset(json_path, station, {"Scratch": "dent"})


def test_coco_box_outside_image_names_file_and_annotation(tmp_path: Path, station) -> None:
    json_path = write_coco(tmp_path / "coco")
    data = json.loads(json_path.read_text())
    data["annotations"][0]["bbox"] = [150, 10, 30, 10]  # 150 + 30 > 160
    json_path.write_text(json.dumps(data))
    name = next(i["file_name"] for i in data["images"] if i["id"] == data["annotations"][0]["image_id"])
    with pytest.raises(DatasetError, match=rf"annotations\[0\] \(id 1\) on {name}: bbox .* outside the 160x96"):
        load_dataset(json_path, station, MAP)


def test_coco_sub_pixel_overshoot_is_clipped(tmp_path: Path, station) -> None:
    json_path = write_coco(tmp_path / "coco")
    data = json.loads(json_path.read_text())
    data["annotations"][0]["bbox"] = [140.2, 80.5, 20.3, 15.9]  # ends at 160.5, 96.4: export rounding
    json_path.write_text(json.dumps(data))
    item = next(i for i in load_dataset(json_path, station, MAP).images if i.boxes)
    assert item.boxes[0].bbox == (140, 80, 160, 96)


def test_coco_undecodable_image_and_unknown_category(tmp_path: Path, station) -> None:
    json_path = write_coco(tmp_path / "coco")
    (tmp_path / "coco" / "part_2.png").write_bytes(b"not a png")
    data = json.loads(json_path.read_text())
    data["annotations"][0]["category_id"] = 99
    json_path.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as info:
        load_dataset(json_path, station, MAP)
    message = str(info.value)
    assert "part_2.png" in message and "cannot be decoded" in message
    assert "category_id 99 is not in 'categories'" in message


def test_empty_and_missing_data_sets(tmp_path: Path, station) -> None:
    json_path = tmp_path / "empty.json"
    json_path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(json_path, station)
    (tmp_path / "folders" / "ok").mkdir(parents=True)
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(tmp_path / "folders", station)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope", station)
    (tmp_path / "bare").mkdir()
    with pytest.raises(DatasetError, match="no labels.json, no COCO JSON and no class folders"):
        load_dataset(tmp_path / "bare", station)


def test_class_folders_normalise_every_kind(tmp_path: Path, station) -> None:
    root = write_class_folders(tmp_path / "folders", per_class=4)
    dataset = load_dataset(root, station)
    assert detect_format(root)[0] == "folders"
    assert {i.whole_class for i in dataset.images} == {"ok", *DEFECTS}
    for item in dataset.images:
        image = item.load()
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    # the 16-bit copy of an image reads back as the 8-bit one (full-range scaling, not per-image stretch)
    grey = np.array([[0, 1000, 65535]], np.uint16)
    assert to_bgr_uint8(grey)[0, :, 0].tolist() == [0, 4, 255]
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (200, 100, 50, 255)
    rgba[0, 1] = (200, 100, 50, 0)  # fully transparent: black
    assert to_bgr_uint8(rgba)[0].tolist() == [[200, 100, 50], [0, 0, 0]]


def test_class_folder_the_config_does_not_name(tmp_path: Path, station) -> None:
    root = write_class_folders(tmp_path / "folders", per_class=1, kinds=False)
    (root / "dent").mkdir()
    cv2.imwrite(str(root / "dent" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"class folder dent/ is not a class the config names"):
        load_dataset(root, station)
    dataset = load_dataset(root, station, {"dent": "spot"})
    assert sum(i.whole_class == "spot" for i in dataset.images) == 2


def test_class_folder_tiles_are_one_tile_each(tmp_path: Path, station) -> None:
    root = write_class_folders(tmp_path / "folders", per_class=2)
    dataset = load_dataset(root, station)
    planner = TilePlanner.from_config(station.tiling)  # 64-px tiles + global view
    tiles = list(labelled_tiles(dataset, planner))
    assert len(tiles) == 2 * len(dataset)
    assert all(t.label == t.image.whole_class and t.pixels.shape == (64, 64, 3) for t in tiles)
    big = np.zeros((300, 150, 3), np.uint8)
    assert fit_tile(big, 64).shape == (64, 32, 3)


def test_labels_json_and_tiles_match_the_pipeline(tmp_path: Path, station) -> None:
    clip = write_demo_clip(tmp_path / "demo", frames=4, size=(256, 160), seed=3)
    dataset = load_dataset(tmp_path / "demo", station, {"missing_piece": "crack"})
    assert [i.key for i in dataset.images] == [f"demo/clip.mp4#{n}" for n in range(4)]
    assert {i.group for i in dataset.images} == {"demo/clip.mp4"}
    planner = TilePlanner.from_config(station.tiling)
    frame = dataset.images[2].load()
    expected_tiles, expected_pixels = planner.crop(frame)
    got = [t for t in labelled_tiles(dataset, planner, include_ambiguous=True) if t.image.frame_index == 2]
    assert [t.tile for t in got] == expected_tiles
    assert np.array_equal(np.stack([t.pixels for t in got]), expected_pixels)
    n_boxes = sum(len(f["defects"]) for f in clip.labels["frames"])
    assert sum(len(i.boxes) for i in dataset.images) == n_boxes


def test_fingerprint_changes_with_labels_and_pixels(tmp_path: Path, station) -> None:
    json_path = write_coco(tmp_path / "coco")
    first = load_dataset(json_path, station, MAP).fingerprint()
    assert load_dataset(json_path, station, MAP).fingerprint() == first
    image = cv2.imread(str(tmp_path / "coco" / "part_0.png"))
    image[0, 0] = 0
    cv2.imwrite(str(tmp_path / "coco" / "part_0.png"), image)
    second = load_dataset(json_path, station, MAP).fingerprint()
    assert second != first
    data = json.loads(json_path.read_text())
    data["annotations"][0]["bbox"][0] += 1
    json_path.write_text(json.dumps(data))
    assert load_dataset(json_path, station, MAP).fingerprint() != second


def test_split_is_by_group_and_deterministic(tmp_path: Path, station) -> None:
    for seed in range(3):
        write_demo_clip(tmp_path / f"clip{seed}", frames=3, size=(128, 96), seed=seed)
    dataset = load_datasets([tmp_path / f"clip{s}" for s in range(3)], station, {"missing_piece": "crack"})
    train, val = split_dataset(dataset, 0.3, seed=7)
    assert {i.group for i in train.images}.isdisjoint({i.group for i in val.images})
    assert len(train) + len(val) == len(dataset) == 9
    again = split_dataset(dataset, 0.3, seed=7)
    assert [i.key for i in again[1].images] == [i.key for i in val.images]
    one = load_dataset(tmp_path / "clip0", station, {"missing_piece": "crack"})
    with pytest.raises(DatasetError, match="only one group"):
        split_dataset(one, 0.3, seed=0)
    by_image = split_dataset(one, 0.3, seed=0, by="image")
    assert len(by_image[1]) == 1 and len(by_image[0]) == 2


def test_frames_in_any_order_decode_to_the_right_pixels(tmp_path: Path, station) -> None:
    write_demo_clip(tmp_path / "demo", frames=5, size=(128, 96), seed=2)
    dataset = load_dataset(tmp_path / "demo", station, {"missing_piece": "crack"})
    shuffled = dataset.subset([dataset.images[i] for i in (3, 1, 4, 0, 2)])
    for item, frame in iter_frames(shuffled, 64):
        assert np.array_equal(frame, item.load()), item.key


def test_labels_json_for_another_video_is_named(tmp_path: Path, station) -> None:
    write_demo_clip(tmp_path / "a", frames=2, size=(128, 96), seed=0)
    write_demo_clip(tmp_path / "b", frames=2, size=(160, 96), seed=0)
    (tmp_path / "a" / "clip.mp4").write_bytes((tmp_path / "b" / "clip.mp4").read_bytes())
    with pytest.raises(DatasetError, match="labels are for 128x96 frames but clip.mp4 is 160x96"):
        load_dataset(tmp_path / "a", station, {"missing_piece": "crack"})


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 900), st.integers(1, 900), st.sampled_from([32, 64, 512]))
def test_fit_tile_keeps_aspect_and_never_upscales(width: int, height: int, tile: int) -> None:
    fitted = fit_tile(np.zeros((height, width, 3), np.uint8), tile)
    h, w = fitted.shape[:2]
    assert max(h, w) <= tile
    if max(width, height) <= tile:
        assert (w, h) == (width, height)
    else:  # the longer side becomes the tile, the other scales with it (to the pixel)
        scale = tile / max(width, height)
        assert max(w, h) == tile
        assert abs(w - width * scale) <= 0.5 or w == 1
        assert abs(h - height * scale) <= 0.5 or h == 1

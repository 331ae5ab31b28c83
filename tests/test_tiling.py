"""Tiling: SAHI-identical grids, full coverage, ROI filtering, crops, and the `tiles` command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sahi.slicing import get_slice_bboxes

from inspector.commands import tiles as tiles_cmd
from inspector.config import MaskROI, RectROI
from inspector.errors import ConfigError, InspectorError
from inspector.tiling import Tile, TilePlanner, crop_tiles, load_roi_mask, plan_tiles

TILES = st.sampled_from([32, 64, 96, 128, 256, 320, 512, 640, 1024])
OVERLAPS = st.one_of(st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.29, 0.5, 0.75, 0.9]), st.floats(0, 0.95))


@st.composite
def frames(draw: st.DrawFn) -> tuple[int, int, int, float]:
    tile = draw(TILES)
    overlap = draw(OVERLAPS)
    side = st.one_of(
        st.integers(1, tile),  # smaller than (or exactly) a tile
        st.integers(1, 8).map(lambda k: k * tile),  # exact multiples
        st.integers(1, 4096),
        st.sampled_from([1080, 1920, 2160, 3840]),
    )
    return draw(side), draw(side), tile, overlap


def local_boxes(tiles: list[Tile]) -> list[list[int]]:
    return [list(t.bbox) for t in tiles if not t.is_global]


@settings(max_examples=300, deadline=None)
@given(frames())
def test_local_tiles_equal_sahi(frame: tuple[int, int, int, float]) -> None:
    width, height, tile, overlap = frame
    expected = get_slice_bboxes(
        height, width, slice_height=tile, slice_width=tile, overlap_height_ratio=overlap, overlap_width_ratio=overlap
    )
    assert local_boxes(plan_tiles(width, height, tile, overlap)) == expected


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (3840, 2160), (512, 512), (1024, 512), (300, 200)])
def test_common_frames_equal_sahi(width: int, height: int) -> None:
    expected = get_slice_bboxes(height, width, 512, 512, overlap_height_ratio=0.2, overlap_width_ratio=0.2)
    assert local_boxes(plan_tiles(width, height, 512, 0.2)) == expected


@settings(max_examples=150, deadline=None)
@given(frames())
def test_tiles_cover_every_pixel_inside_the_frame(frame: tuple[int, int, int, float]) -> None:
    width, height, tile, overlap = frame
    tiles = plan_tiles(width, height, tile, overlap)
    hits = np.zeros((height, width), dtype=bool)
    for t in tiles:
        x0, y0, x1, y1 = t.bbox
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert (t.width, t.height) == (min(tile, width), min(tile, height))
        hits[y0:y1, x0:x1] = True
    assert hits.all()
    assert [t.index for t in tiles] == list(range(len(tiles)))
    assert [(t.bbox[1], t.bbox[0]) for t in tiles] == sorted((t.bbox[1], t.bbox[0]) for t in tiles)  # row-major


@pytest.mark.parametrize(("width", "height"), [(100, 60), (512, 512), (511, 300), (1, 1)])
def test_frame_no_bigger_than_a_tile_is_one_tile(width: int, height: int) -> None:
    assert [t.bbox for t in plan_tiles(width, height, 512, 0.2)] == [(0, 0, width, height)]


def test_global_view_comes_last_with_the_whole_frame() -> None:
    tiles = plan_tiles(1920, 1080, 512, 0.2, global_view=True)
    assert len(tiles) == 16 and tiles[-1] == Tile(15, (0, 0, 1920, 1080), is_global=True)
    assert not any(t.is_global for t in tiles[:-1])


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"), [(0, 10, 512, 0.2), (10, 10, 500, 0.2), (10, 10, 0, 0.2), (10, 10, 64, 1.0)]
)
def test_bad_parameters_raise_inspector_error(width: int, height: int, tile: int, overlap: float) -> None:
    with pytest.raises(InspectorError) as error:
        plan_tiles(width, height, tile, overlap)
    assert error.value.hint


def test_rect_roi_keeps_exactly_the_intersecting_tiles() -> None:
    rect = (1000, 300, 1300, 700)
    everything = plan_tiles(1920, 1080, 512, 0.2)
    kept = plan_tiles(1920, 1080, 512, 0.2, roi=RectROI(rect=rect), global_view=True)

    def meets(b: tuple[int, int, int, int]) -> bool:
        return b[0] < rect[2] and rect[0] < b[2] and b[1] < rect[3] and rect[1] < b[3]

    assert [t.bbox for t in kept[:-1]] == [t.bbox for t in everything if meets(t.bbox)]
    assert 0 < len(kept) - 1 < len(everything)
    assert kept[-1].is_global and kept[-1].bbox == (0, 0, 1920, 1080)
    assert [t.index for t in kept] == list(range(len(kept)))


def test_rect_roi_outside_the_frame_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="outside"):
        plan_tiles(640, 480, 256, 0.2, roi=RectROI(rect=(1000, 1000, 1100, 1100)))


def test_mask_roi_keeps_tiles_by_coverage(tmp_path: Path) -> None:
    mask = np.zeros((1024, 1024), dtype=np.uint8)
    mask[:512, :512] = 255  # exactly tile 0 of a 2x2 grid without overlap
    mask[512:612, 512:1024] = 255  # 100 rows of tile 3: coverage 100/512 = 0.195
    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), mask)
    low = plan_tiles(1024, 1024, 512, 0.0, roi=MaskROI(mask=path, min_coverage=0.19))
    high = plan_tiles(1024, 1024, 512, 0.0, roi=MaskROI(mask=path, min_coverage=0.2))
    assert [t.bbox for t in low] == [(0, 0, 512, 512), (512, 512, 1024, 1024)]
    assert [t.bbox for t in high] == [(0, 0, 512, 512)]
    # The same mask passed already loaded gives the same plan.
    loaded = load_roi_mask(path)
    again = plan_tiles(1024, 1024, 512, 0.0, roi=MaskROI(mask=path, min_coverage=0.19), roi_mask=loaded)
    assert again == low


def test_mask_roi_errors(tmp_path: Path) -> None:
    with pytest.raises(InspectorError, match="does not exist"):
        load_roi_mask(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(InspectorError, match="not a readable image"):
        load_roi_mask(junk)
    small = np.ones((100, 100), dtype=bool)
    with pytest.raises(ConfigError, match="100x100 but frames are 640x480"):
        plan_tiles(640, 480, 256, 0.2, roi_mask=small)
    with pytest.raises(ConfigError, match="no tile"):
        plan_tiles(640, 480, 256, 0.2, roi_mask=np.zeros((480, 640), dtype=bool))


def test_colour_mask_counts_any_channel(tmp_path: Path) -> None:
    mask = np.zeros((8, 8, 3), dtype=np.uint8)
    mask[0, 0] = (1, 0, 0)  # pure dark blue: 0 as grey, but non-zero
    path = tmp_path / "colour.png"
    cv2.imwrite(str(path), mask)
    loaded = load_roi_mask(path)
    assert loaded.dtype == bool and loaded.shape == (8, 8) and loaded.sum() == 1 and loaded[0, 0]


def test_16_bit_and_rgba_masks_read_as_the_one_decoder_reads_images(tmp_path: Path) -> None:
    """The mask goes through inspector/decode.py: 16-bit full range, alpha composited over black."""
    deep = np.zeros((8, 8), dtype=np.uint16)
    deep[:4] = 65535  # inspect the top half
    deep[4:, :4] = 64  # 64/65535 of full scale: black in 8 bits, as the decoder shows it
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert cv2.imread(str(tmp_path / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    expected = np.zeros((8, 8), dtype=bool)
    expected[:4] = True
    np.testing.assert_array_equal(load_roi_mask(tmp_path / "deep.png"), expected)
    # White painted everywhere, transparent on the bottom half: a transparent pixel shows nothing.
    rgba = np.full((8, 8, 4), 255, dtype=np.uint8)
    rgba[4:, :, 3] = 0
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    assert cv2.imread(str(tmp_path / "rgba.png"), cv2.IMREAD_UNCHANGED).shape == (8, 8, 4)
    np.testing.assert_array_equal(load_roi_mask(tmp_path / "rgba.png"), expected)


def test_crops_are_rgb_and_exact() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    tiles = plan_tiles(500, 300, 128, 0.25)
    crops = crop_tiles(image, tiles, 128)
    assert crops.shape == (len(tiles), 128, 128, 3) and crops.dtype == np.uint8
    for t, crop in zip(tiles, crops):
        x0, y0, x1, y1 = t.bbox
        np.testing.assert_array_equal(crop, image[y0:y1, x0:x1, ::-1])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 96), st.integers(1, 96), st.booleans())
def test_small_frames_pad_with_zeros_bottom_right(width: int, height: int, dirty: bool) -> None:
    rng = np.random.default_rng(width * 1000 + height)
    image = rng.integers(1, 256, (height, width, 3), dtype=np.uint8)  # never 0: padding is visible
    tiles = plan_tiles(width, height, 64, 0.2)
    out = np.full((len(tiles), 64, 64, 3), 7, dtype=np.uint8) if dirty else None  # a reused buffer
    crops = crop_tiles(image, tiles, 64, out=out)
    for t, crop in zip(tiles, crops):
        x0, y0, x1, y1 = t.bbox
        np.testing.assert_array_equal(crop[: y1 - y0, : x1 - x0], image[y0:y1, x0:x1, ::-1])
        assert not crop[y1 - y0 :].any() and not crop[:, x1 - x0 :].any()


@pytest.mark.parametrize(("width", "height"), [(3840, 2160), (1920, 1080), (1279, 719), (300, 200)])
def test_global_view_is_the_area_resized_frame(width: int, height: int) -> None:
    # A smooth frame: the halving shortcut must match one-step INTER_AREA closely.
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack(
        [xx * 255 // (width - 1), yy * 255 // (height - 1), (xx + yy) * 255 // (width + height - 2)], axis=2
    ).astype(np.uint8)
    tiles = plan_tiles(width, height, 512, 0.2, global_view=True)
    view = crop_tiles(image, tiles[-1:], 512)[0]
    direct = cv2.cvtColor(cv2.resize(image, (512, 512), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    # direct is RGB, and the channels differ (blue = x ramp, red = diagonal): a swap fails here.
    assert np.abs(view.astype(int) - direct.astype(int)).max() <= 1


def test_global_view_averages_fine_detail() -> None:
    # One-pixel stripes average to mid grey in an area resize (a point sampler would alias).
    image = np.zeros((2160, 3840, 3), np.uint8)
    image[:, ::2] = 255
    view = crop_tiles(image, plan_tiles(3840, 2160, 512, 0.2, global_view=True)[-1:], 512)[0]
    assert np.abs(view.astype(int) - 128).max() <= 1


def test_crop_rejects_a_plan_for_another_frame_size() -> None:
    tiles = plan_tiles(1920, 1080, 512, 0.2)
    with pytest.raises(ValueError, match="does not fit"):
        crop_tiles(np.zeros((720, 1280, 3), np.uint8), tiles, 512)


def test_planner_caches_per_size_and_crops() -> None:
    planner = TilePlanner(256, 0.2, global_view=True)
    first = planner.plan(800, 600)
    assert first == plan_tiles(800, 600, 256, 0.2, global_view=True)
    first.clear()  # callers get a copy; the cache is untouched
    assert planner.plan(800, 600) == plan_tiles(800, 600, 256, 0.2, global_view=True)
    tiles, crops = planner.crop(np.zeros((600, 800, 3), np.uint8))
    assert crops.shape == (len(tiles), 256, 256, 3)


def test_planner_reads_the_mask_once_at_start(tmp_path: Path) -> None:
    with pytest.raises(InspectorError, match="does not exist"):
        TilePlanner(256, 0.2, roi=MaskROI(mask=tmp_path / "none.png"))
    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), np.full((600, 800), 255, np.uint8))
    planner = TilePlanner(256, 0.2, roi=MaskROI(mask=path))
    path.unlink()  # the mask is already in memory
    assert planner.plan(800, 600) == plan_tiles(800, 600, 256, 0.2)


# --- the `inspector tiles` command -------------------------------------------------------------


def run_tiles(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    tiles_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["tiles", *argv])
    return args.func(args)


def test_cli_size_prints_sahi_grid_and_global(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_tiles(["--size", "1920x1080", "--tile", "512", "--overlap", "0.2", "--global-view"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tiles"] == get_slice_bboxes(1080, 1920, 512, 512, overlap_height_ratio=0.2, overlap_width_ratio=0.2)
    assert result["global"] == [0, 0, 1920, 1080]


def test_cli_image_and_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = np.full((400, 600, 3), 90, np.uint8)
    cv2.imwrite(str(tmp_path / "frame.png"), image)
    preview = tmp_path / "out" / "grid.png"
    assert run_tiles([str(tmp_path / "frame.png"), "--tile", "256", "--overlap", "0", "--preview", str(preview)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {
        "tiles": [
            [0, 0, 256, 256],
            [256, 0, 512, 256],
            [344, 0, 600, 256],
            [0, 144, 256, 400],
            [256, 144, 512, 400],
            [344, 144, 600, 400],
        ]
    }
    drawn = cv2.imread(str(preview))
    assert drawn.shape == image.shape and (drawn != 90).any()


def test_cli_config_uses_its_tiling_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "station.yaml"
    config.write_text(
        "tiling: {tile: 256, overlap: 0.25, global_view: false, roi: {rect: [0, 0, 100, 100]}}\n"
        "model: {path: models/tiny}\n"
        "inspection: {product: a panel, defects: {scratch: {description: a line}}}\n",
        encoding="utf-8",
    )
    assert run_tiles(["--size", "1024x768", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out) == {"tiles": [[0, 0, 256, 256]]}
    assert run_tiles(["--size", "1024x768", "--config", str(config), "--global-view"]) == 0
    assert json.loads(capsys.readouterr().out)["global"] == [0, 0, 1024, 768]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "1920by1080"], "not WIDTHxHEIGHT"),
        (["--size", "0x100"], "each side"),
        (["--size", "640x480", "--tile", "500"], "multiple of 32"),
        (["--size", "640x480", "--overlap", "1.5"], "overlap"),
        (["missing.png"], "does not exist"),
        (["--size", "640x480", "--config", "nope.yaml"], "does not exist"),
        (["--size", "640x480", "--config", "x.yaml", "--tile", "256"], "alternatives"),
    ],
)
def test_cli_errors_are_inspector_errors_with_hints(argv: list[str], message: str) -> None:
    with pytest.raises(InspectorError, match=message) as error:
        run_tiles(argv)
    assert error.value.hint


def test_cli_unreadable_image(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(InspectorError, match="not a readable image"):
        run_tiles([str(bad)])

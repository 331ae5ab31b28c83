"""`inspector tiles`: show how a frame is cut into tiles, as JSON and optionally as a picture."""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import cv2
import numpy as np
from pydantic import ValidationError

from inspector.config import TilingConfig, format_validation_error, load_config
from inspector.decode import read_image_file
from inspector.errors import InspectorError
from inspector.tiling import Tile, TilePlanner

log = logging.getLogger(__name__)

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_MAX_SIDE = 65536
# Preview colours (BGR): neighbouring tiles alternate so overlaps stay visible.
_COLOURS = ((0, 200, 255), (255, 160, 0), (80, 220, 80), (220, 80, 220))
_GLOBAL_COLOUR = (0, 0, 255)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tiles",
        help="show the tile grid for a frame size (JSON, optional PNG preview)",
        description=(
            'Print the tiles a frame is cut into, as JSON: {"tiles": [[x0, y0, x1, y1], ...]} in frame pixels,\n'
            'row-major, exclusive ends, plus "global": [0, 0, w, h] when a global view is on.\n'
            "Tiling settings come from --config (its tiling section, ROI included) or --tile/--overlap."
        ),
        epilog="examples:\n  inspector tiles --size 3840x2160 --tile 512 --overlap 0.2\n"
        "  inspector tiles frame.png --config configs/demo.yaml --preview grid.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("image", nargs="?", help="a frame (image file) to tile")
    what.add_argument("--size", metavar="WxH", help="a frame size instead of an image, e.g. 3840x2160")
    parser.add_argument("--config", metavar="FILE", help="station YAML; uses its tiling section")
    parser.add_argument("--tile", type=int, metavar="N", help="tile side in pixels, a multiple of 32 (default 512)")
    parser.add_argument(
        "--overlap", type=float, metavar="R", help="overlap ratio between neighbours, 0 <= r < 1 (default 0.2)"
    )
    parser.add_argument("--global-view", action="store_true", help="add the downscaled whole-frame view")
    parser.add_argument("--preview", metavar="OUT.png", help="draw the grid on the image (or a blank canvas)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = _tiling_config(args)
    image = _read_image(args.image) if args.image else None
    width, height = (image.shape[1], image.shape[0]) if image is not None else _parse_size(args.size)
    tiles = TilePlanner.from_config(config).plan(width, height)
    result: dict[str, list[int] | list[list[int]]] = {"tiles": [list(t.bbox) for t in tiles if not t.is_global]}
    if any(t.is_global for t in tiles):
        result["global"] = [0, 0, width, height]
    if args.preview:
        canvas = image if image is not None else np.full((height, width, 3), 40, dtype=np.uint8)
        _write_preview(Path(args.preview), canvas, tiles)
    print(json.dumps(result))
    return 0


def _tiling_config(args: argparse.Namespace) -> TilingConfig:
    if args.config:
        if args.tile is not None or args.overlap is not None:
            raise InspectorError("--config and --tile/--overlap are alternatives", "give one or the other")
        config = load_config(args.config).tiling
        return config.model_copy(update={"global_view": True}) if args.global_view else config
    values = {"tile": args.tile, "overlap": args.overlap}
    try:
        return TilingConfig(**{k: v for k, v in values.items() if v is not None}, global_view=args.global_view)
    except ValidationError as error:
        raise InspectorError(
            format_validation_error("--tile/--overlap", error), "e.g. --tile 512 --overlap 0.2"
        ) from None


def _parse_size(text: str) -> tuple[int, int]:
    match = _SIZE.match(text)
    if not match:
        raise InspectorError(f"--size {text!r} is not WIDTHxHEIGHT", "e.g. --size 3840x2160")
    width, height = int(match[1]), int(match[2])
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        raise InspectorError(f"--size {text!r}: each side must be 1..{_MAX_SIDE} px", "e.g. --size 1920x1080")
    return width, height


def _read_image(path_text: str) -> np.ndarray:
    path = Path(path_text)
    if not path.is_file():
        raise InspectorError(f"image {path} does not exist", "pass an image file, or --size WxH for a frame size")
    image = read_image_file(path)  # decoded as the pipeline decodes every image
    if image is None:
        raise InspectorError(f"{path} is not a readable image", "use PNG, JPEG, BMP or TIFF")
    return image


def _write_preview(path: Path, image: np.ndarray, tiles: list[Tile]) -> None:
    canvas = image.copy()
    scale = max(1, round(max(canvas.shape[:2]) / 1000))  # line width readable on 4K
    for t in tiles:
        x0, y0, x1, y1 = t.bbox
        colour = _GLOBAL_COLOUR if t.is_global else _COLOURS[t.index % len(_COLOURS)]
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), colour, 2 * scale if t.is_global else scale)
        if not t.is_global:
            cv2.putText(
                canvas,
                str(t.index),
                (x0 + 6 * scale, y0 + 22 * scale),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.7 * scale,
                colour,
                scale,
                cv2.LINE_AA,
            )
    if not path.suffix:
        path = path.with_suffix(".png")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        written = cv2.imwrite(str(path), canvas)
    except (OSError, cv2.error) as error:
        raise InspectorError(f"cannot write preview {path}: {error}", "use a writable path ending in .png") from None
    if not written:
        raise InspectorError(f"cannot write preview {path}", "use a writable path ending in .png")
    log.info("wrote tile preview %s (%d tiles)", path, len(tiles))

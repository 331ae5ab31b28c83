"""THE labelling rule: frame boxes -> one label per tile. Training and evaluation both use it.

For a local tile and a labelled box, the *visible part* is their intersection. The box
**counts** for the tile when its visible part is at least ``MIN_BOX_SHARE`` (50 %) of the
box, or at least ``MIN_TILE_SHARE`` (10 %) of the tile (a large defect seen only in part
still fills the tile). A tile's label is then:

- the class with the largest visible area summed over the boxes that count (ties: the
  first class name in alphabetical order), when any box counts;
- otherwise ``None`` — *ambiguous*, ignored for training and for tile-level evaluation —
  when some box shows only a sliver in it (the tile holds part of a defect, too little to
  say it shows one, too much to call it clean);
- otherwise ``"ok"``.

The global tile (whole frame downscaled) is ``"ok"`` when the frame has no box, else the
class of the largest box (ties as above). Frame truth follows the same "largest box" rule
(``LabelledImage.truth_class``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from inspector.datasets.base import BBox, LabelledBox
from inspector.tiling import Tile

MIN_BOX_SHARE = 0.5
MIN_TILE_SHARE = 0.1


def intersection_area(a: BBox, b: BBox) -> int:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return width * height if width > 0 and height > 0 else 0


def largest_box_class(boxes: Sequence[LabelledBox]) -> str:
    """The class of the largest box ("ok" when there is none); ties go to the first name alphabetically."""
    if not boxes:
        return "ok"
    return min(boxes, key=lambda b: (-b.area, b.class_name)).class_name


def tile_label(
    boxes: Sequence[LabelledBox],
    tile: Tile,
    *,
    min_box_share: float = MIN_BOX_SHARE,
    min_tile_share: float = MIN_TILE_SHARE,
) -> str | None:
    """One tile's label under the rule above."""
    if tile.is_global:
        return largest_box_class(boxes)
    tile_area = tile.width * tile.height
    counted: dict[str, int] = defaultdict(int)
    sliver = False
    for box in boxes:
        visible = intersection_area(box.bbox, tile.bbox)
        if visible == 0:
            continue
        if visible >= min_box_share * box.area or visible >= min_tile_share * tile_area:
            counted[box.class_name] += visible
        else:
            sliver = True
    if counted:
        return min(counted, key=lambda name: (-counted[name], name))
    return None if sliver else "ok"


def tile_labels(
    boxes: Sequence[LabelledBox],
    tiles: Sequence[Tile],
    *,
    min_box_share: float = MIN_BOX_SHARE,
    min_tile_share: float = MIN_TILE_SHARE,
) -> list[str | None]:
    """The label of every tile of a plan (``None`` = ambiguous, ignored)."""
    return [tile_label(boxes, tile, min_box_share=min_box_share, min_tile_share=min_tile_share) for tile in tiles]

"""The explanation a model is taught from the labels, and the check that one names the class and the place.

Taught text (``explanation_text``), built from the label alone, as fine-tuning recipes for
VLM inspectors build their targets from annotations:

    "<class>: <description>, <region>, <size>"   e.g. "scratch: a thin line, top left, small"

- class: the class name as the station's taxonomy spells it (underscores as spaces);
- description: the taxonomy's ``description`` of the class;
- region: where the defect's visible centre sits on a 3 x 3 grid over the tile ("top left",
  "middle right", "centre", ...);
- size: how much of the tile side the defect's visible box spans ("small" < 1/4, "medium" < 1/2,
  "large" otherwise).

An OK tile's text is the taxonomy's ``ok_description``. ``names_class_and_region`` reads a
generated text back the same way, so a score of "explanations that name the predicted class and
the right region" needs no fuzzy matching.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inspector.config import InspectionConfig

ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "centre", "right")
SIZES = ((0.25, "small"), (0.5, "medium"))  # share of the tile side -> word; "large" beyond


def region(where: tuple[float, float]) -> str:
    """The 3 x 3 grid cell of a point given as shares of the tile (x, y): "top left" ... "centre"."""
    column = COLUMNS[min(2, max(0, int(where[0] * 3)))]
    row = ROWS[min(2, max(0, int(where[1] * 3)))]
    return "centre" if (row, column) == ("middle", "centre") else f"{row} {column}"


def size_word(extent: float) -> str:
    """The size of a defect whose visible box spans ``extent`` of the tile side (its longer side)."""
    return next((word for limit, word in SIZES if extent < limit), "large")


def spoken_class(name: str) -> str:
    return name.replace("_", " ")


def explanation_text(
    inspection: InspectionConfig, label: int, where: tuple[float, float] | None, extent: float | None = None
) -> str:
    """The sentence taught for a tile of class index ``label`` (0 = ok) whose defect sits at ``where``."""
    return "".join(explanation_parts(inspection, label, where, extent))


def explanation_parts(
    inspection: InspectionConfig, label: int, where: tuple[float, float] | None, extent: float | None = None
) -> tuple[str, str]:
    """``explanation_text`` in two: what the answer letter implies ("<class>: <description>") and what
    only the image tells (", <region>, <size>"; empty for OK). Inference forces the first (the
    verdict implies it) and chooses the second among ``taught_texts``' places."""
    if label == 0:
        return inspection.ok_description, ""
    name = inspection.classes[label]
    place = [region(where)] if where is not None else []
    if extent is not None:
        place.append(size_word(extent))
    return f"{spoken_class(name)}: {inspection.defects[name].description}", "".join(f", {p}" for p in place)


def taught_texts(inspection: InspectionConfig) -> list[tuple[str, str]]:
    """Every defect explanation the recipe can teach for a taxonomy (each class x region x size), as parts."""
    places = [(x / 3 + 1 / 6, y / 3 + 1 / 6) for y in range(3) for x in range(3)]
    extents = [0.1, 0.3, 0.9]  # one per size word
    return [
        explanation_parts(inspection, label, where, extent)
        for label in range(1, len(inspection.classes))
        for where in places
        for extent in extents
    ]


def names_class_and_region(text: str, class_name: str, where: tuple[float, float]) -> bool:
    """Whether ``text`` opens with ``class_name`` and names the grid cell of ``where`` as one of its parts."""
    parts = [part.strip().lower() for part in text.split(",")]
    opening = parts[0].split(":", 1)[0].strip() if parts else ""
    return opening == spoken_class(class_name).lower() and region(where) in parts[1:]


Box = tuple[int, int, int, int]


def _overlap(a: Sequence[int], b: Sequence[int]) -> Box | None:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def explanation_hit(verdict: Mapping[str, Any], boxes: Sequence[Box]) -> bool | None:
    """Whether an NG verdict's explanation names its class and where a labelled defect sits in the tile.

    ``verdict``: a frame verdict as written to JSONL (with its ``tiles``); ``boxes``: the frame's
    labelled defect boxes ``[x0, y0, x1, y1)``. The words judged are those of the most confident
    explained defect (what the summary, report and live page show); the tile that spoke them is
    that defect's tile with those words and the highest probability of its class; the right region
    is the centre of the largest labelled box area inside that tile. None when there is nothing to
    judge (not NG, no explanation, no labelled box); False when the tile holds no labelled defect.
    """
    if verdict.get("verdict") != "NG" or not boxes:
        return None
    defects = [d for d in verdict.get("defects") or [] if (d.get("explanation") or "").strip()]
    if not defects:
        return None
    defect = max(defects, key=lambda d: float(d["confidence"]))
    name, text = str(defect["class"]), str(defect["explanation"])
    spoken = [t for t in verdict.get("tiles") or [] if t["index"] in defect["tiles"] and t.get("explanation") == text]
    if not spoken:
        return False
    tile = max(spoken, key=lambda t: float(t["probabilities"].get(name, 0.0)))["bbox"]
    inside = [o for o in (_overlap(b, tile) for b in boxes) if o is not None]
    if not inside:
        return False
    x0, y0, x1, y1 = max(inside, key=lambda o: (o[2] - o[0]) * (o[3] - o[1]))
    width, height = tile[2] - tile[0], tile[3] - tile[1]
    where = (((x0 + x1) / 2 - tile[0]) / width, ((y0 + y1) / 2 - tile[1]) / height)
    return names_class_and_region(text, name, where)

"""Mapping a data set's class names onto the station's classes (``--map src=dst``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from inspector.datasets.base import DatasetError


class ClassMapper:
    """Source class name -> station class ("ok" or a defect class); anything unmapped is an error.

    A name the station already uses maps to itself. Mapping a box category to "ok" drops those
    boxes (e.g. a "background" category some tools export).
    """

    def __init__(self, classes: Sequence[str], class_map: Mapping[str, str] | None = None) -> None:
        self.classes = tuple(classes)
        self.class_map = dict(class_map or {})
        for source, target in self.class_map.items():
            if target not in self.classes:
                raise DatasetError(
                    f"--map {source}={target}: {target!r} is not one of the station's classes {list(self.classes)}",
                    "map onto 'ok' or a class listed under inspection.defects in the config",
                )

    def __call__(self, name: str, where: str) -> str:
        target = self.class_map.get(name, name)
        if target not in self.classes:
            raise DatasetError(
                f"{where}: class {name!r} is not one of the station's classes {list(self.classes)}",
                f"map it with --map {name}=CLASS, or add it to inspection.defects in the config",
            )
        return target


def parse_class_map(items: Sequence[str] | None) -> dict[str, str]:
    """``["src=dst", ...]`` (the CLI's ``--map``) -> a dict; a malformed item is an error."""
    mapping: dict[str, str] = {}
    for item in items or ():
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise DatasetError(f"--map {item!r} is not SRC=DST", "e.g. --map Scratch=scratch")
        mapping[source.strip()] = target.strip()
    return mapping

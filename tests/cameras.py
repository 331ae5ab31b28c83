"""pypylon's camera emulator serving frames of the test's own, and a cable that can be pulled.

``PYLON_CAMEMU`` must be in the environment before pylon's transport layers load (the first
``TlFactory`` call), so importing this module sets it. The emulator's frames come from a folder
(``ImageFilename`` + ``ImageFileMode On`` + ``TestImageSelector Off``); each frame here is a flat
grey of a level that names it, so a test can tell which image a part was judged on.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYLON_CAMEMU", "2")

from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from inspector.camera_config import CameraConfig, FeatureValue  # noqa: E402
from inspector.sources.genicam.grabbing import CameraLost, CameraUnavailable, Grabbed  # noqa: E402
from inspector.sources.genicam.pylon import PylonDriver  # noqa: E402

EMULATOR_SIZE = (1280, 720)  # what the emulator sends our frames at (the DESIGN facts measured 1280x720 BGR8)
LEVELS = (20, 70, 120, 170, 220)


def write_emulator_frames(folder: Path, size: tuple[int, int] = EMULATOR_SIZE) -> Path:
    """One PNG per level in ``LEVELS``; the emulator serves them in name order, then wraps."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    for index, value in enumerate(LEVELS):
        cv2.imwrite(str(folder / f"frame_{index}.png"), np.full((height, width, 3), value, np.uint8))
    return folder


def emulator_features(folder: Path) -> dict[str, FeatureValue]:
    return {"ImageFilename": str(folder), "ImageFileMode": "On", "TestImageSelector": "Off"}


def emulator_camera(folder: Path, **settings: object) -> CameraConfig:
    """``source.camera`` for the emulator serving ``folder`` as BGR frames of EMULATOR_SIZE."""
    width, height = EMULATOR_SIZE
    base: dict[str, object] = {"pixel_format": "BGR8", "roi": {"width": width, "height": height}}
    base.update(settings)
    features = dict(emulator_features(folder))
    features.update(base.pop("features", {}) or {})  # type: ignore[arg-type]
    return CameraConfig(**base, features=features)


def level_of(image: np.ndarray) -> int:
    return int(image[image.shape[0] // 2, image.shape[1] // 2, 0])


class UnpluggableDriver(PylonDriver):
    """The real emulator behind a cable the test can pull: the emulator itself cannot be unplugged.

    While unplugged, opening finds no camera and a grab fails as pylon does for a removed device.
    """

    unplugged = False

    def open(self, config: CameraConfig) -> None:
        if self.unplugged:
            raise CameraUnavailable(f"no Basler camera with serial or user name {self.selector!r} (found: none)")
        super().open(config)

    def grab(self, timeout_s: float) -> Grabbed | None:
        if self.unplugged:
            raise CameraLost("the device was removed")
        return super().grab(timeout_s)

    def removed(self) -> bool:
        return self.unplugged or super().removed()

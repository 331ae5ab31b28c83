"""The ``source.camera`` section: how a GenICam camera (``pylon://``, ``genicam://``) is set up.

Only the shape and the obvious bounds are checked here; whether a value fits *this* camera
(its exposure range, its pixel formats, its sensor size) is checked against the camera's own
feature ranges when it opens (inspector/sources/genicam/settings.py), so the error names the
feature, the value and what the camera allows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CameraTrigger = Literal["free_run", "software", "hardware"]
FeatureValue = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraROI(_Strict):
    """The sensor area the camera sends (its own AOI, before tiling): smaller is faster on the wire."""

    x: int = Field(0, ge=0, description="OffsetX in sensor pixels")
    y: int = Field(0, ge=0, description="OffsetY in sensor pixels")
    width: int = Field(gt=0, description="Width in pixels")
    height: int = Field(gt=0, description="Height in pixels")


class CameraConfig(_Strict):
    """Camera settings written to the device when it opens (and again after every reconnect)."""

    trigger: CameraTrigger = Field(
        "free_run",
        description="free_run: the camera streams, the freshest frame is judged; software: a part trigger fires "
        "the camera and exactly that image is judged for that part; hardware: the camera's line input fires it, "
        "frames are matched to part triggers in order",
    )
    trigger_line: str = Field("Line1", description="hardware trigger: the TriggerSource (the camera's input line)")
    trigger_activation: Literal["RisingEdge", "FallingEdge"] = Field(
        "RisingEdge", description="hardware trigger: which edge of the line signal starts an exposure"
    )
    exposure_us: float | None = Field(None, gt=0, description="ExposureTime in microseconds (default: the camera's)")
    gain_db: float | None = Field(None, ge=0, description="Gain in dB (default: the camera's)")
    pixel_format: str | None = Field(
        None,
        description="PixelFormat: Mono8, BGR8, RGB8, BGRa8, RGBa8 or Bayer{RG,BG,GR,GB}8 (the 'Packed' names of "
        "older cameras too); converted to BGR with OpenCV. Default: the camera's",
    )
    roi: CameraROI | None = Field(None, description="the camera's own area of interest (Width/Height/OffsetX/Y)")
    frame_rate: float | None = Field(
        None, gt=0, description="free_run: AcquisitionFrameRate in frames/s (default: as fast as the camera goes)"
    )
    grab_timeout_s: float = Field(
        1.0, gt=0, le=60, description="how long one grab may take before it counts as a grab time-out"
    )
    fire_retries: int = Field(
        1, ge=0, le=5, description="software trigger: fire again this many times when the image comes back failed"
    )
    max_timeouts: int = Field(
        5, ge=1, le=1000, description="free_run: this many grab time-outs in a row and the camera is reopened"
    )
    features: dict[str, FeatureValue] = Field(
        default_factory=dict,
        description="any other GenICam feature by its SFNC name, written after the settings above "
        "(e.g. the pylon emulator's ImageFilename); each is checked against the camera like the others",
    )

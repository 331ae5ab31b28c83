"""Write ``source.camera`` to a camera, checking every value against the camera's own feature ranges.

A value the camera would refuse (or silently clamp) is a ``CameraSettingError`` naming the
feature, the value and what this camera allows, before anything is written to it. Feature
names differ between camera generations (SFNC 2 ``ExposureTime`` vs. the older
``ExposureTimeAbs``): each setting tries its names in order and uses the first the camera has.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from inspector.camera_config import CameraConfig, FeatureValue
from inspector.errors import SourceError
from inspector.sources.genicam.features import FeatureInfo, FeatureMap
from inspector.sources.genicam.pixels import SUPPORTED_PIXEL_FORMATS, normalise_pixel_format

log = logging.getLogger(__name__)

EXPOSURE = ("ExposureTime", "ExposureTimeAbs")
GAIN = ("Gain", "GainAbs")
FRAME_RATE = ("AcquisitionFrameRate", "AcquisitionFrameRateAbs")


class CameraSettingError(SourceError):
    """A camera setting this camera does not accept."""


@dataclass(frozen=True)
class Write:
    """One feature write, checked before any is made."""

    feature: str
    value: FeatureValue
    setting: str  # the config field it comes from, for the error message


def plan_writes(features: FeatureMap, config: CameraConfig, camera: str) -> list[Write]:
    """Every write ``config`` needs, in the order the camera needs them; raises on the first bad value."""
    writes: list[Write] = []
    if config.pixel_format is not None:
        writes.append(_pixel_format(features, config.pixel_format, camera))
    if config.roi is not None:
        roi = config.roi
        # Offsets to 0 first: a larger Width is only allowed once the offset leaves room for it.
        for name in ("OffsetX", "OffsetY"):
            if features.info(name) is not None:
                writes.append(Write(name, 0, "roi"))
        writes += [
            _number(features, ("Width",), roi.width, camera, "roi.width"),
            _number(features, ("Height",), roi.height, camera, "roi.height"),
        ]
        for name, size_feature, size, offset in (
            ("OffsetX", "Width", roi.width, roi.x),
            ("OffsetY", "Height", roi.height, roi.y),
        ):
            if offset or features.info(name) is not None:  # a camera without offsets can still take offset 0
                limit = _offset_limit(features, size_feature, size)
                writes.append(_number(features, (name,), offset, camera, f"roi.{name[-1].lower()}", limit=limit))
    if config.exposure_us is not None:
        writes.append(_number(features, EXPOSURE, config.exposure_us, camera, "exposure_us"))
    if config.gain_db is not None:
        writes.append(_number(features, GAIN, config.gain_db, camera, "gain_db"))
    if config.frame_rate is not None:
        if config.trigger != "free_run":
            raise CameraSettingError(
                f"camera {camera}: frame_rate {config.frame_rate:g} applies to free_run only "
                f"(trigger is {config.trigger}: the trigger sets the pace)",
                "remove source.camera.frame_rate or set trigger: free_run",
            )
        if features.info("AcquisitionFrameRateEnable") is not None:
            writes.append(Write("AcquisitionFrameRateEnable", True, "frame_rate"))
        writes.append(_number(features, FRAME_RATE, config.frame_rate, camera, "frame_rate"))
    writes += _trigger_writes(features, config, camera)
    for name, value in config.features.items():
        writes.append(_any(features, name, value, camera))
    return writes


def apply_settings(features: FeatureMap, config: CameraConfig, camera: str) -> list[Write]:
    """Check every setting, then write them; returns what was written."""
    writes = plan_writes(features, config, camera)
    for write in writes:
        try:
            features.set(write.feature, write.value)
        except Exception as error:  # noqa: BLE001 - the SDK's own refusal, named with our context
            raise CameraSettingError(
                f"camera {camera}: writing {write.feature} = {write.value!r} (from source.camera.{write.setting}) "
                f"failed: {first_line(error)}",
                "check the value against the camera's documentation; the camera may need to stop grabbing first",
            ) from None
        log.debug("camera %s: %s = %r", camera, write.feature, write.value)
    return writes


def _trigger_writes(features: FeatureMap, config: CameraConfig, camera: str) -> list[Write]:
    if config.trigger == "free_run":
        writes = []
        if features.info("TriggerSelector") is not None:
            writes.append(_enum(features, "TriggerSelector", "FrameStart", camera, "trigger"))
        if features.info("TriggerMode") is not None:
            writes.append(Write("TriggerMode", "Off", "trigger"))
        return writes
    if features.info("TriggerMode") is None:
        raise CameraSettingError(
            f"camera {camera} has no TriggerMode feature: it cannot be triggered ({config.trigger})",
            "use source.camera.trigger: free_run with this camera",
        )
    source = "Software" if config.trigger == "software" else config.trigger_line
    writes = []
    if features.info("TriggerSelector") is not None:
        writes.append(_enum(features, "TriggerSelector", "FrameStart", camera, "trigger"))
    writes += [
        Write("TriggerMode", "On", "trigger"),
        _enum(features, "TriggerSource", source, camera, "trigger_line" if config.trigger == "hardware" else "trigger"),
    ]
    if config.trigger == "software" and features.info("TriggerSoftware") is None:
        raise CameraSettingError(
            f"camera {camera} has no TriggerSoftware command: it cannot be fired by software",
            "use trigger: hardware (wire the line controller to the camera's input) or free_run",
        )
    if config.trigger == "hardware" and features.info("TriggerActivation") is not None:
        writes.append(_enum(features, "TriggerActivation", config.trigger_activation, camera, "trigger_activation"))
    return writes


def _pixel_format(features: FeatureMap, wanted: str, camera: str) -> Write:
    info = _require(features, ("PixelFormat",), camera, "pixel_format")
    # The camera's own spelling of the format asked for (BGR8 vs. the older BGR8Packed).
    normalised = normalise_pixel_format(wanted)
    if normalised is None:
        raise CameraSettingError(
            f"camera {camera}: pixel_format {wanted!r} cannot be converted to BGR here",
            f"use one of {', '.join(SUPPORTED_PIXEL_FORMATS)} (8 bits per channel)",
        )
    for entry in info.entries:
        if normalise_pixel_format(entry) == normalised:
            return Write("PixelFormat", entry, "pixel_format")
    usable = [entry for entry in info.entries if normalise_pixel_format(entry) is not None]
    raise CameraSettingError(
        f"camera {camera}: PixelFormat {wanted!r} (source.camera.pixel_format) is not offered by this camera; "
        f"it offers {', '.join(info.entries) or 'none'}",
        f"use one of {', '.join(usable) or 'the formats above (none converts to BGR here)'}",
    )


def _number(
    features: FeatureMap,
    names: tuple[str, ...],
    value: float,
    camera: str,
    setting: str,
    *,
    limit: float | None = None,
) -> Write:
    info = _require(features, names, camera, setting)
    if info.kind not in ("integer", "float") or info.minimum is None or info.maximum is None:
        raise CameraSettingError(f"camera {camera}: {info.name} is not a number feature ({info.kind})")
    maximum = info.maximum if limit is None else min(info.maximum, limit)
    if not info.writable:
        raise CameraSettingError(
            f"camera {camera}: {info.name} (source.camera.{setting}) is read-only on this camera now",
            "remove the setting, or check whether another setting (an auto mode) locks it",
        )
    allowed = f"{_fmt(info.minimum)}..{_fmt(maximum)}"
    if not info.minimum <= value <= maximum:
        raise CameraSettingError(
            f"camera {camera}: {info.name} {_fmt(value)} (source.camera.{setting}) is outside the camera's "
            f"range {allowed}",
            f"set source.camera.{setting} within {allowed}",
        )
    if info.kind == "integer":
        if value != int(value):
            raise CameraSettingError(f"camera {camera}: {info.name} must be a whole number, not {_fmt(value)}")
        step = int(info.increment or 1)
        if (int(value) - int(info.minimum)) % step:
            lower = int(value) - (int(value) - int(info.minimum)) % step
            raise CameraSettingError(
                f"camera {camera}: {info.name} {int(value)} (source.camera.{setting}) is not a multiple of the "
                f"camera's step {step} from {int(info.minimum)}",
                f"use {lower} or {lower + step}",
            )
        return Write(info.name, int(value), setting)
    return Write(info.name, float(value), setting)


def _enum(features: FeatureMap, name: str, value: str, camera: str, setting: str) -> Write:
    info = _require(features, (name,), camera, setting)
    if info.entries and value not in info.entries:
        raise CameraSettingError(
            f"camera {camera}: {name} {value!r} (source.camera.{setting}) is not one this camera offers",
            f"use one of {', '.join(info.entries)}",
        )
    return Write(name, value, setting)


def _any(features: FeatureMap, name: str, value: FeatureValue, camera: str) -> Write:
    setting = f"features.{name}"
    info = _require(features, (name,), camera, setting)
    if info.kind in ("integer", "float") and not isinstance(value, bool) and isinstance(value, int | float):
        return _number(features, (name,), value, camera, setting)
    if info.kind == "enumeration":
        return _enum(features, name, str(value), camera, setting)
    if info.kind == "boolean" and not isinstance(value, bool):
        raise CameraSettingError(f"camera {camera}: {name} is a boolean feature; write true or false, not {value!r}")
    if info.kind in ("command", "other") or (info.kind in ("integer", "float") and not isinstance(value, int | float)):
        raise CameraSettingError(f"camera {camera}: {name} is a {info.kind} feature; {value!r} cannot be written")
    if not info.writable:
        raise CameraSettingError(f"camera {camera}: {name} (source.camera.{setting}) is read-only on this camera now")
    return Write(name, value, setting)


def _require(features: FeatureMap, names: tuple[str, ...], camera: str, setting: str) -> FeatureInfo:
    for name in names:
        info = features.info(name)
        if info is not None:
            return info
    raise CameraSettingError(
        f"camera {camera} has no {' or '.join(names)} feature (source.camera.{setting})",
        f"remove source.camera.{setting}: this camera does not offer it",
    )


def _offset_limit(features: FeatureMap, size_feature: str, size: int) -> float | None:
    """The largest offset that keeps ``size`` pixels on the sensor (max Width at offset 0 is the sensor)."""
    info = features.info(size_feature)
    return None if info is None or info.maximum is None else info.maximum - size


def _fmt(value: float) -> str:
    """1000000 rather than 1e+06: the range as a person would type it into the config."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def first_line(error: BaseException) -> str:
    """An SDK exception's first line (pylon's run on with file names and line numbers)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

"""Basler cameras through pypylon: ``pylon://SERIAL`` or ``pylon://INDEX`` (``pylon://0``: the first found).

pypylon's camera emulator (``PYLON_CAMEMU=N`` in the environment, device class
``BaslerCamEmu``) behaves as a camera here; with ``ImageFilename`` (a folder of frames),
``ImageFileMode: On`` and ``TestImageSelector: Off`` in ``source.camera.features`` it serves
your own frames.
"""

from __future__ import annotations

import logging
from typing import Any

from inspector.camera_config import CameraConfig
from inspector.errors import SourceError
from inspector.sources.genicam.features import PylonFeatures
from inspector.sources.genicam.grabbing import CameraLost, CameraUnavailable, Grabbed
from inspector.sources.genicam.pixels import to_bgr
from inspector.sources.genicam.settings import apply_settings, first_line

log = logging.getLogger(__name__)


def import_pylon() -> Any:
    try:
        from pypylon import pylon
    except ImportError:
        raise SourceError(
            "pylon:// sources need Basler's pypylon, which is not installed",
            "pip install 'line-inspector[genicam]'",
        ) from None
    return pylon


class PylonDriver:
    """One Basler camera (or emulator) picked by serial number or by index."""

    def __init__(self, selector: str) -> None:
        self.pylon = import_pylon()
        self.selector = selector
        self.name = f"pylon {selector}"
        self.camera: Any = None
        self.features: PylonFeatures | None = None
        self._tick_hz = 1e9  # USB3 Vision and GigE ace 2 count ns; GigE ace 1 says otherwise (read at open)
        self.first_block_id: int | None = 0

    def _device_info(self) -> Any:
        factory = self.pylon.TlFactory.GetInstance()
        devices = list(factory.EnumerateDevices())
        if self.selector.isdigit() and len(self.selector) < 4:  # an index, not a serial (serials are long)
            index = int(self.selector)
            if index < len(devices):
                return devices[index]
            raise CameraUnavailable(f"no Basler camera at index {index} ({len(devices)} found)")
        for device in devices:
            if device.GetSerialNumber() == self.selector or device.GetUserDefinedName() == self.selector:
                return device
        found = ", ".join(d.GetSerialNumber() for d in devices) or "none"
        raise CameraUnavailable(f"no Basler camera with serial or user name {self.selector!r} (found: {found})")

    def open(self, config: CameraConfig) -> None:
        pylon = self.pylon
        info = self._device_info()
        self.name = f"pylon {info.GetSerialNumber()} ({info.GetModelName()})"
        # Block ids count from 0 after StartGrabbing on USB3 (and the emulator), from 1 on GigE Vision.
        self.first_block_id = 1 if "GigE" in info.GetDeviceClass() else 0
        try:
            camera = pylon.InstantCamera(pylon.TlFactory.GetInstance().CreateDevice(info))
            if config.trigger == "software":
                # Before Open(): the configuration sets TriggerMode/TriggerSource the way pylon expects.
                camera.RegisterConfiguration(
                    pylon.SoftwareTriggerConfiguration(), pylon.RegistrationMode_ReplaceAll, pylon.Cleanup_Delete
                )
            camera.Open()
        except Exception as error:  # noqa: BLE001 - busy, unplugged between enumerate and open
            raise CameraUnavailable(f"{self.name} cannot be opened: {first_line(error)}") from None
        self.camera = camera
        self.features = PylonFeatures(camera.GetNodeMap())
        try:
            apply_settings(self.features, config, info.GetSerialNumber())
        except Exception:
            self.close()
            raise
        tick = self.features.info("GevTimestampTickFrequency")
        if tick is not None:
            self._tick_hz = float(self.features.get("GevTimestampTickFrequency")) or self._tick_hz

    def start(self, latest_only: bool) -> None:
        strategy = self.pylon.GrabStrategy_LatestImageOnly if latest_only else self.pylon.GrabStrategy_OneByOne
        self.camera.StartGrabbing(strategy)

    def fire(self, timeout_s: float) -> None:
        pylon = self.pylon
        try:
            if self.camera.WaitForFrameTriggerReady(int(timeout_s * 1000), pylon.TimeoutHandling_Return):
                self.camera.ExecuteSoftwareTrigger()
        except Exception as error:  # noqa: BLE001
            if self.removed():
                raise CameraLost(first_line(error)) from None
            raise

    def grab(self, timeout_s: float) -> Grabbed | None:
        pylon = self.pylon
        try:
            result = self.camera.RetrieveResult(int(timeout_s * 1000), pylon.TimeoutHandling_Return)
        except Exception as error:  # noqa: BLE001 - pylon raises on a removed device
            if self.removed() or not self.camera.IsGrabbing():
                raise CameraLost(first_line(error)) from None
            raise
        if result is None or not result.IsValid():
            return None
        try:
            block_id = int(result.GetBlockID())
            ticks = int(result.GetTimeStamp())
            stamp = ticks / self._tick_hz if ticks else None
            if not result.GrabSucceeded():
                reason = f"incomplete buffer: {result.GetErrorDescription()} (error {result.GetErrorCode():#x})"
                return Grabbed(None, block_id, stamp, failure=reason)
            image = to_bgr(result.GetArray(), _pixel_format_name(result), result.GetWidth(), result.GetHeight())
            return Grabbed(image, block_id, stamp)
        finally:
            result.Release()

    def removed(self) -> bool:
        return self.camera is None or bool(self.camera.IsCameraDeviceRemoved())

    def close(self) -> None:
        camera, self.camera = self.camera, None
        if camera is None:
            return
        try:
            if camera.IsGrabbing():
                camera.StopGrabbing()
        finally:
            camera.Close()
            camera.DestroyDevice()


def _pixel_format_name(result: Any) -> str:
    """The PFNC name of a grab result's pixel type (pypylon's enum value -> its symbolic name)."""
    from pypylon import pylon

    for name in ("Mono8", "BGR8packed", "RGB8packed", "BGRA8packed", "RGBA8packed",
                 "BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8"):  # fmt: skip
        if result.GetPixelType() == getattr(pylon, f"PixelType_{name}", None):
            return {"BGR8packed": "BGR8", "RGB8packed": "RGB8", "BGRA8packed": "BGRa8", "RGBA8packed": "RGBa8"}.get(
                name, name
            )
    return f"pixel type {result.GetPixelType():#x}"

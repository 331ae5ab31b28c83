"""Any vendor's GenICam camera through its GenTL producer and ``harvesters``.

``genicam:///opt/vendor/lib/producer.cti?serial=1234`` (or ``?index=0``, ``?id=DEVICE_ID``, or
nothing: the first device). The ``genicam`` wheel ships a simulator producer, ``viky.cti``
(three simulated cameras, serials 0-2, Mono8/RGBa8, no trigger); ``genicam://viky.cti`` names it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from inspector.camera_config import CameraConfig
from inspector.errors import SourceError
from inspector.sources.genicam.features import GenApiFeatures
from inspector.sources.genicam.grabbing import CameraLost, CameraUnavailable, Grabbed
from inspector.sources.genicam.pixels import to_bgr
from inspector.sources.genicam.settings import apply_settings

log = logging.getLogger(__name__)

SIMULATOR = "viky.cti"


def simulator_producer() -> Path:
    """The simulator GenTL producer inside the installed ``genicam`` wheel."""
    import genicam

    return Path(genicam.__file__).parent / SIMULATOR


def resolve_producer(producer: str) -> Path:
    """The ``.cti`` file a URI names; the bare name ``viky.cti`` is the genicam wheel's simulator."""
    try:
        import genicam  # noqa: F401
        import harvesters.core  # noqa: F401
    except ImportError:
        raise SourceError(
            "genicam:// sources need harvesters and genicam, which are not installed",
            "pip install 'line-inspector[genicam]'",
        ) from None
    path = simulator_producer() if producer == SIMULATOR else Path(producer).expanduser()
    if path.suffix.lower() != ".cti":
        raise SourceError(f"GenTL producer {producer!r} is not a .cti file", "genicam:///path/to/producer.cti?serial=…")
    if not path.is_file():
        raise SourceError(
            f"GenTL producer {path} does not exist",
            "install the camera vendor's SDK (it ships the .cti) and give its full path",
        )
    return path


class HarvesterDriver:
    """One device of a GenTL producer, picked by serial, id or index."""

    def __init__(self, producer: Path, selector: dict[str, str]) -> None:
        from harvesters.core import Harvester

        self._harvester_type = Harvester
        self.producer = producer
        self.selector = selector
        self.name = f"genicam {producer.name} {selector or 'first device'}"
        self.harvester: Any = None
        self.acquirer: Any = None
        self.incomplete = 0
        self.first_block_id: int | None = None  # producers differ: the first frame seen counts as the first

    def open(self, config: CameraConfig) -> None:
        harvester = self._harvester_type()
        harvester.add_file(str(self.producer), check_existence=True)
        harvester.update()
        devices = list(harvester.device_info_list)
        try:
            search = self._search(devices)
            device = devices[search] if isinstance(search, int) else _matching(devices, search)
            acquirer = harvester.create(search)
        except (IndexError, ValueError, LookupError) as error:
            found = ", ".join(f"{d.serial_number} ({d.id_})" for d in devices) or "none"
            harvester.reset()
            raise CameraUnavailable(f"no device {self.selector or 0} on {self.producer.name} (found: {found})") from (
                error
            )
        except Exception as error:  # noqa: BLE001
            harvester.reset()
            raise CameraUnavailable(f"{self.producer.name}: cannot open the device: {error}") from None
        self.harvester, self.acquirer = harvester, acquirer
        serial = str(device.serial_number or device.id_)
        self.name = f"genicam {self.producer.name} {serial}"
        from harvesters.core import Callback, ImageAcquirer

        driver = self

        class _Incomplete(Callback):  # harvesters discards an incomplete buffer and tells only this way
            def emit(self, context: object | None = None) -> None:
                driver.incomplete += 1

        acquirer.add_callback(ImageAcquirer.Events.INCOMPLETE_BUFFER, _Incomplete())
        try:
            apply_settings(GenApiFeatures(acquirer.remote_device.node_map), config, self.name)
        except Exception:
            self.close()
            raise
        self._software = config.trigger == "software"

    def _search(self, devices: list[Any]) -> Any:
        if "serial" in self.selector:
            return {"serial_number": self.selector["serial"]}
        if "id" in self.selector:
            return {"id_": self.selector["id"]}
        index = int(self.selector.get("index", "0"))
        if index >= len(devices):
            raise IndexError(index)
        return index

    def start(self, latest_only: bool) -> None:
        # Latest-only: a ring of a few buffers, the freshest fetched; triggered: every buffer in order.
        self.acquirer.num_buffers = 4 if latest_only else 16
        self.acquirer.start()

    def fire(self, timeout_s: float) -> None:
        self.acquirer.remote_device.node_map.TriggerSoftware.execute()

    def grab(self, timeout_s: float) -> Grabbed | None:
        before = self.incomplete
        try:
            buffer = self.acquirer.try_fetch(timeout=timeout_s)
        except Exception as error:  # noqa: BLE001 - the producer lost the device
            raise CameraLost(str(error).splitlines()[0]) from None
        if buffer is None:
            if self.incomplete > before:
                return Grabbed(None, failure="incomplete buffer (discarded by the GenTL producer)")
            return None
        try:
            component = buffer.payload.components[0]
            try:
                block_id = int(buffer.module.frame_id)
            except Exception:  # noqa: BLE001 - not every producer reports it
                block_id = None
            image = to_bgr(component.data, component.data_format, component.width, component.height)
            return Grabbed(image, block_id, _timestamp_s(buffer))
        finally:
            buffer.queue()

    def removed(self) -> bool:
        return self.acquirer is None or not self.acquirer.is_valid()

    def close(self) -> None:
        acquirer, harvester = self.acquirer, self.harvester
        self.acquirer = self.harvester = None
        try:
            if acquirer is not None:
                acquirer.stop()
                acquirer.destroy()
        finally:
            if harvester is not None:
                harvester.reset()


def _matching(devices: list[Any], search: dict[str, str]) -> Any:
    for device in devices:
        if all(str(getattr(device, key)) == value for key, value in search.items()):
            return device
    raise LookupError(search)


def _timestamp_s(buffer: Any) -> float | None:
    """The buffer's device timestamp in seconds; None when the producer has none (the simulator)."""
    try:
        ticks = int(buffer.timestamp)
        hz = int(buffer.timestamp_frequency)
    except Exception:  # noqa: BLE001 - harvesters raises a bare AttributeError when the node map lacks it
        return None
    return ticks / hz if ticks and hz else None

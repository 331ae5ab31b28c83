"""GenICam cameras (GigE Vision, USB3 Vision): ``pylon://`` through pypylon, ``genicam://`` through harvesters.

Both are optional (``pip install 'line-inspector[genicam]'``); the SDKs are imported only when
such a URI is opened, so the rest of the pipeline never needs them.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

from inspector.camera_config import CameraConfig
from inspector.config import ReconnectConfig
from inspector.config_paths import genicam_producer
from inspector.errors import SourceError
from inspector.sources.genicam.grabbing import CameraDriver, CameraSource

GENICAM_SCHEMES = frozenset({"pylon", "genicam"})
_SELECTORS = ("serial", "id", "index")

__all__ = ["GENICAM_SCHEMES", "CameraSource", "open_camera", "parse_camera_uri"]


def parse_camera_uri(uri: str) -> tuple[str, str, dict[str, str]]:
    """``pylon://SERIAL`` -> ("pylon", SERIAL, {}); ``genicam://PRODUCER.cti?serial=X`` -> ("genicam", path, {...})."""
    parts = urlsplit(uri.strip())
    scheme = parts.scheme.lower()
    if scheme == "pylon":
        selector = unquote(parts.netloc or parts.path.lstrip("/"))
        if not selector:
            raise SourceError(
                f"source {uri!r} names no camera", "write pylon://SERIAL (or pylon://0 for the first camera found)"
            )
        return scheme, selector, {}
    producer = genicam_producer(uri)
    if producer is not None:
        if not producer:
            raise SourceError(
                f"source {uri!r} names no GenTL producer", "write genicam:///path/to/producer.cti?serial=…"
            )
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - set(_SELECTORS))
        if unknown or len(query) > 1:
            raise SourceError(
                f"source {uri!r}: the query may name one device by {', '.join(_SELECTORS)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
                "write ?serial=1234, ?id=DEVICE_ID or ?index=0",
            )
        if "index" in query and not query["index"].isdigit():
            raise SourceError(f"source {uri!r}: index must be a number", "write ?index=0")
        return scheme, producer, query
    raise SourceError(f"source {uri!r} is not a camera URI", "write pylon://SERIAL or genicam://PRODUCER.cti")


def driver_for(uri: str) -> tuple[CameraDriver, str]:
    """The SDK driver for a camera URI and the source id it reports as."""
    scheme, target, query = parse_camera_uri(uri)
    if scheme == "pylon":
        from inspector.sources.genicam.pylon import PylonDriver

        return PylonDriver(target), f"pylon:{target}"
    from inspector.sources.genicam.harvester import HarvesterDriver, resolve_producer

    producer = resolve_producer(target)
    label = next(iter(query.values()), "0")
    return HarvesterDriver(producer, query), f"genicam:{producer.name}:{label}"


def open_camera(
    uri: str,
    camera: CameraConfig | None = None,
    *,
    reconnect: ReconnectConfig | None = None,
    wait_for_first: bool = False,
) -> CameraSource:
    """Open a ``pylon://`` or ``genicam://`` camera with its settings (raises SourceError naming the fix)."""
    driver, source_id = driver_for(uri)
    return CameraSource(
        driver, camera or CameraConfig(), source_id=source_id, reconnect=reconnect, wait_for_first=wait_for_first
    )

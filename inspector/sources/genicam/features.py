"""One view of a camera's GenICam features over both SDKs (pypylon's node map, genicam's GenApi).

Both wrap the same GenApi node model (integer, float, enumeration, boolean, string, command
nodes with min/max/increment and access modes); this module is the only place that knows how
each SDK spells it, so settings are validated and written by one piece of code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

FeatureKind = Literal["integer", "float", "enumeration", "boolean", "string", "command", "other"]


@dataclass(frozen=True)
class FeatureInfo:
    """What the camera says about one feature right now."""

    name: str
    kind: FeatureKind
    writable: bool
    minimum: float | None = None
    maximum: float | None = None
    increment: float | None = None
    entries: tuple[str, ...] = ()


class FeatureMap(Protocol):
    """A camera's features: look one up (None when the camera has no such feature), read, write, execute."""

    def info(self, name: str) -> FeatureInfo | None: ...

    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: object) -> None: ...

    def execute(self, name: str) -> None: ...


class PylonFeatures:
    """pypylon's ``INodeMap`` (``camera.GetNodeMap()``)."""

    def __init__(self, node_map: Any) -> None:
        from pypylon import genicam

        self._map = node_map
        self._genicam = genicam

    def _node(self, name: str) -> Any:
        node = self._map.GetNode(name)
        if node is None or not self._genicam.IsAvailable(node):
            return None
        return node

    def info(self, name: str) -> FeatureInfo | None:
        node = self._node(name)
        if node is None:
            return None
        g = self._genicam
        writable = bool(g.IsWritable(node))
        kind = _pylon_kind(node)
        if kind in ("integer", "float"):
            increment = None
            try:
                increment = float(node.GetInc()) if kind == "integer" or node.HasInc() else None
            except Exception:  # noqa: BLE001 - not every float has an increment
                increment = None
            return FeatureInfo(name, kind, writable, float(node.GetMin()), float(node.GetMax()), increment)
        if kind == "enumeration":
            entries = tuple(e.GetSymbolic() for e in node.GetEntries() if g.IsAvailable(e))
            return FeatureInfo(name, kind, writable, entries=entries)
        return FeatureInfo(name, kind, writable)

    def get(self, name: str) -> Any:
        node = self._map.GetNode(name)
        return node.GetValue()

    def set(self, name: str, value: object) -> None:
        node = self._map.GetNode(name)
        if _pylon_kind(node) == "enumeration":
            node.SetValue(str(value))
        else:
            node.SetValue(value)

    def execute(self, name: str) -> None:
        self._map.GetNode(name).Execute()


def _pylon_kind(node: Any) -> FeatureKind:
    kinds = {
        "IntegerParameter": "integer",
        "FloatParameter": "float",
        "EnumParameter": "enumeration",
        "BooleanParameter": "boolean",
        "StringParameter": "string",
        "CommandParameter": "command",
    }
    return kinds.get(type(node).__name__, "other")  # type: ignore[return-value]


class GenApiFeatures:
    """The ``genicam.genapi`` node map harvesters gives (``acquirer.remote_device.node_map``)."""

    def __init__(self, node_map: Any) -> None:
        from genicam import genapi

        self._map = node_map
        self._genapi = genapi

    def info(self, name: str) -> FeatureInfo | None:
        if not self._map.has_node(name):
            return None
        node = self._map.get_node(name)
        ga = self._genapi
        if not ga.is_available(node.node):
            return None
        writable = bool(ga.is_writable(node.node))
        kind = _genapi_kind(ga, node.node.principal_interface_type)
        if kind in ("integer", "float"):
            increment = None
            try:
                increment = float(node.inc) if kind == "integer" or node.has_inc() else None
            except Exception:  # noqa: BLE001
                increment = None
            return FeatureInfo(name, kind, writable, float(node.min), float(node.max), increment)
        if kind == "enumeration":
            return FeatureInfo(name, kind, writable, entries=tuple(node.symbolics))
        return FeatureInfo(name, kind, writable)

    def get(self, name: str) -> Any:
        return self._map.get_node(name).value

    def set(self, name: str, value: object) -> None:
        self._map.get_node(name).value = value

    def execute(self, name: str) -> None:
        self._map.get_node(name).execute()


def _genapi_kind(genapi: Any, interface: int) -> FeatureKind:
    kinds = {
        genapi.EInterfaceType.intfIInteger: "integer",
        genapi.EInterfaceType.intfIFloat: "float",
        genapi.EInterfaceType.intfIEnumeration: "enumeration",
        genapi.EInterfaceType.intfIBoolean: "boolean",
        genapi.EInterfaceType.intfIString: "string",
        genapi.EInterfaceType.intfICommand: "command",
    }
    return kinds.get(interface, "other")  # type: ignore[return-value]

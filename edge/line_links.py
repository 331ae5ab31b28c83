"""The box's line-controller interfaces, shared by every station of the process: the OPC UA server
(``edge.opcua``) and the Sparkplug B edge node (``edge.sparkplug``).

The order of use, in edge/service.py and edge/stations.py: ``open_line_links`` (configuration
checked: a missing extra or a bad setting fails before the model loads), ``sinks_for(name)``
into each station's sinks, ``attach(service)`` per station, ``start()`` (a port in use fails
here), ``close()`` after the stations have stopped (the NDEATH, the server's end).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edge.station_control import StationControl
from inspector.config import EdgeConfig, MqttConfig
from inspector.errors import InspectorError
from inspector.sinks.base import Sink

if TYPE_CHECKING:
    from edge.opcua.server import OpcUaServer
    from edge.sparkplug.node import SparkplugNode

log = logging.getLogger(__name__)


class LineLinks:
    def __init__(self, opcua: OpcUaServer | None, sparkplug: SparkplugNode | None) -> None:
        self.opcua = opcua
        self.sparkplug = sparkplug

    def sinks_for(self, station: str) -> list[Sink]:
        sinks: list[Sink] = []
        if self.opcua is not None:
            sinks.append(self.opcua.station_sink(station))
        if self.sparkplug is not None:
            sinks.append(self.sparkplug.station_sink(station))
        return sinks

    def attach(self, station: StationControl) -> None:
        for link in (self.opcua, self.sparkplug):
            if link is not None:
                link.attach(station)

    def start(self) -> None:
        if self.opcua is not None:
            self.opcua.start()
        if self.sparkplug is not None:
            self.sparkplug.start()

    def close(self, timeout_s: float = 5.0) -> None:
        if self.sparkplug is not None:
            self.sparkplug.close(timeout_s)
        if self.opcua is not None:
            self.opcua.close(timeout_s)


def open_line_links(settings: EdgeConfig, mqtt_config: MqttConfig | None) -> LineLinks:
    """The configured interfaces, not yet started; InspectorError for a missing extra or broker."""
    opcua = sparkplug = None
    if settings.opcua is not None:
        try:
            from edge.opcua.server import OpcUaServer
        except ImportError as error:
            raise InspectorError(
                f"edge.opcua is set but the OPC UA package is missing ({error.name})",
                "pip install 'line-inspector[opcua]'",
            ) from None
        opcua = OpcUaServer(settings.opcua)
    if settings.sparkplug is not None:
        try:
            from edge.sparkplug.node import SparkplugNode
        except ImportError as error:
            raise InspectorError(
                f"edge.sparkplug is set but the protobuf package is missing ({error.name})",
                "pip install 'line-inspector[sparkplug]'",
            ) from None
        broker = mqtt_config
        if settings.sparkplug.broker is not None:
            from inspector.mqtt import mqtt_config_from_url

            broker = mqtt_config_from_url(settings.sparkplug.broker, mqtt_config)
        if broker is None:
            raise InspectorError(
                "edge.sparkplug needs a broker: set edge.sparkplug.broker or the station's sinks.mqtt (or --publish)"
            )
        sparkplug = SparkplugNode(settings.sparkplug, broker)
    return LineLinks(opcua, sparkplug)

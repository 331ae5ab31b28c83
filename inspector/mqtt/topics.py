"""MQTT topics in ISA-95 unified-namespace style: ``{root}/{site}/{area}/{line}/{station}/{leaf}``.

The camera is not a topic level: a station's cameras share its verdict stream and the
payload names the camera (``station.camera``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from inspector.config import StationConfig

Leaf = Literal["verdict", "reject", "status", "health", "cmd"]
LEAVES: tuple[Leaf, ...] = ("verdict", "reject", "status", "health", "cmd")


@dataclass(frozen=True)
class Topics:
    """The topics of one station."""

    base: str

    @classmethod
    def for_station(cls, root: str, station: StationConfig) -> Topics:
        return cls("/".join((root, station.site, station.area, station.line, station.station)))

    @property
    def verdict(self) -> str:
        """Every frame verdict (QoS 1)."""
        return f"{self.base}/verdict"

    @property
    def reject(self) -> str:
        """NG only: the compact message PLCs act on (QoS 1, v5 message expiry)."""
        return f"{self.base}/reject"

    @property
    def status(self) -> str:
        """Retained online/degraded/offline; the MQTT Will sets it offline."""
        return f"{self.base}/status"

    @property
    def health(self) -> str:
        """Heartbeats (QoS 0, not retained)."""
        return f"{self.base}/health"

    @property
    def cmd(self) -> str:
        """Inbound commands (MQTT v5 request/response); sub-topics ``cmd/<name>`` are allowed."""
        return f"{self.base}/cmd"

    @property
    def response(self) -> str:
        """Where command answers go: the request's MQTT v5 ResponseTopic must be this or lie under it
        (``response/<requester>``), so a requester cannot make the station publish on another's topics."""
        return f"{self.base}/response"


def watch_filters(
    root: str,
    *,
    line: str | None = None,
    station: str | None = None,
    leaves: tuple[Leaf, ...] = ("verdict", "reject", "status"),
) -> list[str]:
    """Subscription filters for the given leaves; an unset line or station matches any."""
    middle = f"+/+/{line or '+'}/{station or '+'}"
    return [f"{root}/{middle}/{leaf}" for leaf in leaves]


def split_topic(root: str, topic: str) -> tuple[str, str, str, str, str] | None:
    """``(site, area, line, station, leaf)`` of a topic under ``root``; None for anything else."""
    prefix = root + "/"
    if not topic.startswith(prefix):
        return None
    levels = topic[len(prefix) :].split("/")
    if len(levels) != 5:
        return None
    site, area, line, station, leaf = levels
    return site, area, line, station, leaf

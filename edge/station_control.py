"""What a line controller may do to a station and see of it, whatever the protocol (OPC UA, Sparkplug, MQTT).

The OPC UA server (edge/opcua/) and the Sparkplug edge node (edge/sparkplug/) talk to a station
only through ``StationControl``; ``EdgeService`` implements it. Verdicts reach them as sinks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

TriggerOutcome = Literal["accepted", "duplicate", "malformed", "unserved"]


@dataclass(frozen=True)
class LineState:
    """A station's state as a PLC reads it (flat scalars)."""

    state: str  # online / degraded / offline (edge/health.py)
    ready: bool  # online, not paused, and no part waiting: a StartSingleJob is judged at once
    busy: bool  # a triggered part is waiting for its verdict
    paused: bool
    triggered: bool  # the station judges parts on triggers (else every frame: free-running)
    selected_recipe: str
    recipes: tuple[str, ...]
    reason: str | None = None  # why it is not online
    error_code: int = 0  # ERROR_CODES
    counts: dict[str, int] = field(default_factory=dict)  # verdicts published: OK, NG, UNCERTAIN


# ErrorCode as a PLC reads it (OPC UA ErrorCode, Sparkplug Status/Error Code): 0 is no error; paused is none.
ERROR_CODES = {
    0: "no error",
    1: "the camera (source) delivers no frames",
    2: "inference is stalled",
    3: "a worker stopped (the service restarts)",
    4: "the service is shutting down",
}


class StationControl(Protocol):
    name: str

    def trigger_part(self, part_id: str, recipe_id: str | None = None) -> TriggerOutcome:
        """Judge the part in front of the camera now; raises CommandRejected for a bad id or a free-running station."""
        ...

    def select_recipe(self, recipe_id: str) -> dict[str, Any]:
        """Select the recipe for the parts from now on; raises CommandRejected for an unknown id."""
        ...

    def pause(self) -> dict[str, Any]: ...

    def resume(self) -> dict[str, Any]: ...

    def line_state(self) -> LineState: ...


def yield_ratio(counts: dict[str, int]) -> float:
    """OK parts over all judged parts (0.0 before the first)."""
    total = sum(counts.values())
    return counts.get("OK", 0) / total if total else 0.0

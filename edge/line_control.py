"""The station's side of ``StationControl`` (edge/station_control.py): part triggers, recipe selection,
and the flat state a PLC reads. ``StationLineControl`` is a part of ``EdgeService`` (edge/supervisor.py).

``trigger_part`` is the one entry for a part trigger from any protocol (OPC UA StartSingleJob,
the Python API; MQTT ``.../trigger`` payloads take the same TriggerBook): it goes through the
station's ``TriggerBook`` (edge/triggers.py), so every accepted part id gets exactly one verdict.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edge.commands import CommandRejected
from edge.health import Condition, derive_state
from edge.recipes import RecipeBook, UnknownRecipe
from edge.station_control import LineState, TriggerOutcome
from inspector.payloads.trigger import TriggerMessage

if TYPE_CHECKING:
    from edge.inference import Lane
    from edge.publish import PublishWorker

log = logging.getLogger(__name__)


class StationLineControl:
    """Recipes and part triggers of one station (set up by EdgeService.__init__)."""

    name: str
    lane: Lane
    recipes: RecipeBook
    publisher: PublishWorker
    _stopping: bool

    def condition(self) -> Condition:
        raise NotImplementedError

    def _refresh_status(self, *, force: bool = False) -> None:
        raise NotImplementedError

    def trigger_part(self, part_id: str, recipe_id: str | None = None) -> TriggerOutcome:
        """Judge the part in front of the camera now (with ``recipe_id``, else the selected recipe).

        Returns the TriggerBook's outcome: ``accepted`` (its verdict follows), ``duplicate``
        (ignored: the part already has one coming), ``unserved`` (answered UNCERTAIN at once:
        backlog full, unknown recipe...). Raises CommandRejected for a malformed part or recipe
        id, a free-running station (``source.trigger: none``) and a station shutting down.
        """
        triggers = self.lane.triggers
        if triggers is None:
            raise CommandRejected(
                f"station {self.name} is free-running (source.trigger: none): it judges every frame, not parts; "
                "set source.trigger to opcua or mqtt to trigger parts",
                "trigger",
            )
        if self._stopping:
            raise CommandRejected(f"station {self.name} is shutting down", "trigger")
        if recipe_id is not None:
            try:
                self.recipes.check(recipe_id)
            except UnknownRecipe as error:
                raise CommandRejected(str(error), "trigger") from None
        try:
            message = TriggerMessage(part_id=part_id, recipe=recipe_id)
        except ValidationError as error:
            fields = ", ".join(str(item["loc"][0]) for item in error.errors())
            raise CommandRejected(
                f"invalid trigger ({fields}): a part id is 1-128 of letters, digits and _ . : # -, a recipe id "
                "1-64 of letters, digits and _ . : -",
                "trigger",
            ) from None
        return triggers.add(message, received_at=datetime.now(UTC))

    def select_recipe(self, recipe_id: str) -> dict[str, Any]:
        """Select the recipe for the parts from now on (a part already waiting keeps its own).

        Raises CommandRejected naming the station's recipes for an unknown id.
        """
        if not isinstance(recipe_id, str):
            raise CommandRejected("select-recipe: the recipe id must be a string", "select-recipe")
        result = self.recipes.select(recipe_id)
        self.lane.inspector = self.recipes.inspector()  # free-running frames picked up from now on
        self._refresh_status()
        return result

    def _recipe_for(self, requested: str | None) -> str:
        """The TriggerBook's question: this trigger's recipe (ValueError when unknown) or the selected one."""
        return self.recipes.check(requested)

    def line_state(self) -> LineState:
        condition = self.condition()
        state, reason = derive_state(condition)
        triggers = self.lane.triggers
        waiting = triggers.waiting() if triggers is not None else 0
        if condition.stopping:
            code = 4
        elif not condition.workers_alive:
            code = 3
        elif condition.stalled_s is not None:
            code = 2
        elif not condition.source_healthy:
            code = 1
        else:
            code = 0
        return LineState(
            state=state,
            ready=code == 0 and not condition.paused and waiting == 0,
            busy=waiting > 0,
            paused=condition.paused,
            triggered=triggers is not None,
            selected_recipe=self.recipes.selected,
            recipes=tuple(self.recipes.ids),
            reason=reason,
            error_code=code,
            counts=dict(self.publisher.by_verdict),
        )

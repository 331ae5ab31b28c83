"""Product recipes of a running station: one ready Inspector per recipe, and which one is selected.

A station config lists recipes (``recipes:``, inspector/config.py): each a taxonomy, prompt and
thresholds, optionally a model of its own. They are all built at start (a recipe whose model
cannot load fails the start, not a part hours later) and share the station's loaded model
unless they name another one, so a switch costs nothing.

The switch happens between parts, never in the middle of one: a part takes the recipe selected
when its trigger is accepted (or the one its trigger names) and keeps it until its verdict, and
a free-running frame takes the recipe selected when inference picks the frame up. Every verdict
names its recipe (``recipe`` in the verdict payload).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from edge.commands import CommandRejected
from inspector.config import StationFile
from inspector.errors import InspectorError
from inspector.pipeline import Inspector

log = logging.getLogger(__name__)


class UnknownRecipe(ValueError):
    """A recipe id the station does not have; the message lists the ones it has."""


class RecipeBook:
    """The station's recipes, built once; ``select`` and ``inspector`` are safe from any thread."""

    def __init__(self, config: StationFile, running: Inspector) -> None:
        self.config = config
        self._inspectors: dict[str, Inspector] = {running.recipe: running}
        for recipe_id in config.recipe_ids:
            if recipe_id not in self._inspectors:
                self._inspectors[recipe_id] = _build(running, config, recipe_id)
        self._lock = threading.Lock()
        self._selected = running.recipe
        self.switches = 0

    @property
    def ids(self) -> list[str]:
        return list(self._inspectors)

    @property
    def selected(self) -> str:
        return self._selected

    def check(self, recipe_id: str | None) -> str:
        """The recipe a part is judged with: ``recipe_id`` when given and known, else the selected one."""
        if recipe_id is None:
            return self._selected
        if recipe_id not in self._inspectors:
            raise UnknownRecipe(f"unknown recipe {recipe_id[:64]!r}; this station has: {', '.join(self._inspectors)}")
        return recipe_id

    def inspector(self, recipe_id: str | None = None) -> Inspector:
        """The pipeline of ``recipe_id`` (default: the selected recipe)."""
        return self._inspectors[self.check(recipe_id)]

    def select(self, recipe_id: str) -> dict[str, Any]:
        """Select ``recipe_id`` for the parts from now on; ``CommandRejected`` for an unknown id."""
        try:
            self.check(recipe_id)
        except UnknownRecipe as error:
            raise CommandRejected(str(error), "select-recipe") from None
        with self._lock:
            previous, self._selected = self._selected, recipe_id
            if previous != recipe_id:
                self.switches += 1
        if previous != recipe_id:
            log.info("recipe %s selected (was %s); parts already waiting keep theirs", recipe_id, previous)
        return {"recipe": recipe_id, "previous": previous, "recipes": self.ids}

    def describe(self) -> dict[str, Any]:
        """The recipes for status messages, OPC UA and Sparkplug births."""
        return {
            "selected": self._selected,
            "recipes": {
                rid: {
                    "description": self.config.recipes[rid].description if rid in self.config.recipes else None,
                    "product": inspector.config.inspection.product,
                    "classes": inspector.config.inspection.classes,
                }
                for rid, inspector in self._inspectors.items()
            },
        }


def _build(running: Inspector, config: StationFile, recipe_id: str) -> Inspector:
    """The recipe's Inspector, sharing the running model unless the recipe names another one."""
    from edge.reload import build_candidate  # edge.reload imports edge.commands too; keep this module light

    try:
        return build_candidate(running, config, recipe_id)
    except CommandRejected as error:
        raise InspectorError(
            f"recipe {recipe_id}: {error.message}", f"fix recipes.{recipe_id} in the station config"
        ) from None

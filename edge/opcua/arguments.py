"""Method arguments of the OPC UA server, checked the way OPC UA clients expect: as status codes.

A PLC gets no error text from a method call, only a StatusCode (and one per input argument),
so each check maps to the code that says what is wrong: missing or extra arguments, the wrong
type, or a value the station refuses (an unknown recipe, a malformed part id). The service's log
names the problem in words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from asyncua import ua

from inspector.payloads.trigger import PART_ID_PATTERN, RECIPE_ID_PATTERN

_PART_ID = re.compile(PART_ID_PATTERN)
_RECIPE_ID = re.compile(RECIPE_ID_PATTERN)


@dataclass(frozen=True)
class Refusal(Exception):
    """A call answered with ``code``; ``message`` goes to the log; ``argument`` is the index at fault."""

    code: int
    message: str
    argument: int | None = None

    def result(self, given: int) -> ua.CallMethodResult:
        res = ua.CallMethodResult()
        res.StatusCode = ua.StatusCode(self.code)
        codes = [ua.StatusCode() for _ in range(given)]
        if self.argument is not None and self.argument < given:
            codes[self.argument] = ua.StatusCode(self.code)
        res.InputArgumentResults = codes
        return res


def string_arguments(
    method: str, args: Sequence[ua.Variant], names: Sequence[str], *, required: int
) -> list[str | None]:
    """``args`` as Python strings (None for an optional one left out or empty); Refusal otherwise."""
    if len(args) < required:
        raise Refusal(
            ua.StatusCodes.BadArgumentsMissing, f"{method}: needs {', '.join(names[:required])} ({len(args)} given)"
        )
    if len(args) > len(names):
        raise Refusal(ua.StatusCodes.BadTooManyArguments, f"{method}: takes at most {len(names)} arguments")
    values: list[str | None] = []
    for index, (name, arg) in enumerate(zip(names, args)):
        value = arg.Value if isinstance(arg, ua.Variant) else arg
        if value is None or value == "":
            if index < required:
                raise Refusal(ua.StatusCodes.BadInvalidArgument, f"{method}: {name} must not be empty", index)
            values.append(None)
            continue
        if not isinstance(value, str):
            raise Refusal(ua.StatusCodes.BadTypeMismatch, f"{method}: {name} must be a String", index)
        values.append(value)
    values.extend([None] * (len(names) - len(values)))
    return values


def check_part_id(method: str, part_id: str, index: int = 0) -> str:
    if not _PART_ID.match(part_id):
        raise Refusal(
            ua.StatusCodes.BadInvalidArgument,
            f"{method}: PartId must be 1-128 of letters, digits and _ . : # - (starting with a letter or digit)",
            index,
        )
    return part_id


def check_recipe_id(method: str, recipe_id: str, index: int) -> str:
    if not _RECIPE_ID.match(recipe_id):
        raise Refusal(
            ua.StatusCodes.BadInvalidArgument, f"{method}: RecipeId must be 1-64 of letters, digits and _ . : -", index
        )
    return recipe_id

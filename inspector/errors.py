"""One error type for everything the user can fix: it names the problem and the fix."""

from __future__ import annotations


class InspectorError(Exception):
    """A problem with the user's input or environment, reported without a traceback.

    ``hint`` says what to do about it; the CLI prints ``problem`` then ``hint``.
    """

    def __init__(self, problem: str, hint: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint

    def __str__(self) -> str:
        return self.problem if not self.hint else f"{self.problem}\n  hint: {self.hint}"


class SourceError(InspectorError):
    """A frame source cannot be opened or read."""


class ConfigError(InspectorError):
    """A configuration file is missing, unreadable or invalid."""


class ModelError(InspectorError):
    """A model directory or hub id cannot be loaded as Qwen3-VL."""

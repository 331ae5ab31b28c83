"""The one warning every entry point shows for a random or demo model (CLI, edge, live page, cluster)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inspector.backends.base import BackendInfo

RANDOM_WEIGHTS_WARNING = "this is a RANDOM test model: its verdicts mean nothing about parts"
DEMO_MODEL_WARNING = (
    "this is a DEMO model (trained from a tiny random model on synthetic footage): "
    "its verdicts say nothing about real parts"
)


def random_weights_warning(info: BackendInfo) -> str | None:
    """The warning for a random or demo model; None for a real checkpoint."""
    if info.random_weights:
        return RANDOM_WEIGHTS_WARNING
    if getattr(info, "demo_model", False):
        return DEMO_MODEL_WARNING
    return None

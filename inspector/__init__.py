"""line inspector: tiled visual inspection with Qwen3-VL, verdicts over MQTT.

The Python API::

    from inspector import Inspector

    inspector = Inspector.from_config("configs/demo.yaml", model="models/tiny")
    verdict = inspector.predict("part.png")  # or a BGR numpy array, or a PIL image
    print(verdict.verdict, verdict.confidence, [d.class_name for d in verdict.defects])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inspector.version import __version__

__all__ = ["FrameVerdict", "Inspector", "__version__"]

if TYPE_CHECKING:
    from inspector.payloads.verdict import FrameVerdict
    from inspector.pipeline import Inspector


def __getattr__(name: str) -> Any:
    # Imported on first use: `inspector --help` must not pay for OpenCV and the model code.
    if name == "Inspector":
        from inspector.pipeline import Inspector

        return Inspector
    if name == "FrameVerdict":
        from inspector.payloads.verdict import FrameVerdict

        return FrameVerdict
    raise AttributeError(f"module 'inspector' has no attribute {name!r}")

"""The sink protocol: accept a verdict quickly, deliver it reliably, close within a bound."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from inspector.payloads.verdict import FrameVerdict


@runtime_checkable
class Sink(Protocol):
    def publish(self, verdict: FrameVerdict) -> None:
        """Hand over one verdict; must return quickly and never lose it once returned."""
        ...

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed within ``timeout_s``, then release resources."""
        ...

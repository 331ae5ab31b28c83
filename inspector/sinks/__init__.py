"""Where frame verdicts go: JSONL files (replay, audit) and MQTT (live). A sink never blocks inspection."""

from inspector.sinks.base import Sink

__all__ = ["Sink"]

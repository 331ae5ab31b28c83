"""Sparkplug B metrics of the edge node and of each station device, encoded with the Tahu protobuf.

Node metrics (NBIRTH): ``bdSeq``, ``Node Control/Rebirth`` (write true: births again),
``Node Info/Software``, ``Node Control/Command Error``.

Device metrics (DBIRTH, one device per station; DDATA per verdict carries the Inspection/*,
Counts/* and Yield ones)::

    Inspection/Verdict        String   OK / NG / UNCERTAIN
    Inspection/Confidence     Double
    Inspection/Part ID        String   ("" for a free-running frame)
    Inspection/Recipe         String   the recipe the part was judged with
    Inspection/Result ID      String   the verdict's message_id (as on plain MQTT)
    Inspection/Defects        String   defect classes found, comma-separated
    Inspection/Error          String   why the part could not be judged ("" when it was)
    Inspection/Captured At    DateTime
    Inspection/Total ms       Double
    Counts/OK, Counts/NG, Counts/UNCERTAIN   UInt64
    Yield                     Double   OK over all
    Recipe/Selected           String   write (DCMD) to select a recipe
    Recipe/Available          String   comma-separated ids
    Status/State              String   running / degraded / paused / offline
    Status/Paused             Boolean  write (DCMD) true/false to pause/resume
    Device Control/Rebirth    Boolean  write true: this device's DBIRTH again
    Device Control/Command Error String the answer to the last refused DCMD ("" after a good one)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edge.sparkplug import sparkplug_b_pb2 as pb
from edge.station_control import LineState, yield_ratio
from inspector.payloads.verdict import FrameVerdict

# Sparkplug B 3.0 datatypes (section 6.4.16).
UINT64, DOUBLE, BOOLEAN, STRING, DATETIME = 8, 10, 11, 12, 13
_FIELDS = {UINT64: "long_value", DOUBLE: "double_value", BOOLEAN: "boolean_value", STRING: "string_value",
           DATETIME: "long_value"}  # fmt: skip

Value = str | float | int | bool


@dataclass(frozen=True)
class Metric:
    name: str
    datatype: int
    value: Value | None  # None: is_null


def now_ms() -> int:
    return int(time.time() * 1000)


def encode(metrics: Iterable[Metric], *, seq: int | None, timestamp_ms: int | None = None) -> bytes:
    """One Sparkplug B payload; ``seq`` None for NDEATH (it carries none)."""
    stamp = now_ms() if timestamp_ms is None else timestamp_ms
    payload = pb.Payload(timestamp=stamp)
    if seq is not None:
        payload.seq = seq
    for metric in metrics:
        out = payload.metrics.add(name=metric.name, datatype=metric.datatype, timestamp=stamp)
        if metric.value is None:
            out.is_null = True
        else:
            setattr(out, _FIELDS[metric.datatype], metric.value)
    return payload.SerializeToString()


def decode(data: bytes) -> pb.Payload:
    """Parse a payload; raises ValueError (naming the problem) for bytes that are not one."""
    payload = pb.Payload()
    try:
        payload.ParseFromString(data)
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError, and odd bytes of any kind
        raise ValueError(f"not a Sparkplug B protobuf payload ({type(error).__name__})") from None
    return payload


def metric_value(metric: pb.Payload.Metric) -> Value | None:
    """The metric's value whatever field carries it (None when it has none)."""
    kind = metric.WhichOneof("value")
    return None if kind is None else getattr(metric, kind)


def node_birth_metrics(bd_seq: int, software: str) -> list[Metric]:
    return [
        Metric("bdSeq", UINT64, bd_seq),
        Metric("Node Control/Rebirth", BOOLEAN, False),
        Metric("Node Info/Software", STRING, software),
        Metric("Node Control/Command Error", STRING, ""),
    ]


def verdict_metrics(verdict: FrameVerdict | None) -> list[Metric]:
    """The Inspection/* metrics of one verdict (nulls before the first)."""
    if verdict is None:
        names = (("Verdict", STRING), ("Confidence", DOUBLE), ("Part ID", STRING), ("Recipe", STRING),
                 ("Result ID", STRING), ("Defects", STRING), ("Error", STRING), ("Captured At", DATETIME),
                 ("Total ms", DOUBLE))  # fmt: skip
        return [Metric(f"Inspection/{name}", kind, None) for name, kind in names]
    return [
        Metric("Inspection/Verdict", STRING, verdict.verdict),
        Metric("Inspection/Confidence", DOUBLE, verdict.confidence),
        Metric("Inspection/Part ID", STRING, verdict.source.part_id or ""),
        Metric("Inspection/Recipe", STRING, verdict.recipe or ""),
        Metric("Inspection/Result ID", STRING, verdict.message_id),
        Metric("Inspection/Defects", STRING, ",".join(d.class_name for d in verdict.defects)),
        Metric("Inspection/Error", STRING, verdict.error or ""),
        Metric("Inspection/Captured At", DATETIME, int(verdict.source.captured_at.timestamp() * 1000)),
        Metric("Inspection/Total ms", DOUBLE, verdict.timings.total_ms),
    ]


def count_metrics(counts: Mapping[str, int]) -> list[Metric]:
    return [
        *(Metric(f"Counts/{name}", UINT64, int(counts.get(name, 0))) for name in ("OK", "NG", "UNCERTAIN")),
        Metric("Yield", DOUBLE, yield_ratio(dict(counts))),
    ]


def state_metrics(state: LineState) -> list[Metric]:
    return [
        Metric("Recipe/Selected", STRING, state.selected_recipe),
        Metric("Recipe/Available", STRING, ",".join(state.recipes)),
        Metric("Status/State", STRING, state.state),
        Metric("Status/Paused", BOOLEAN, state.paused),
    ]


def device_birth_metrics(state: LineState, last: FrameVerdict | None, counts: Mapping[str, int]) -> list[Metric]:
    return [
        *verdict_metrics(last),
        *count_metrics(counts),
        *state_metrics(state),
        Metric("Device Control/Rebirth", BOOLEAN, False),
        Metric("Device Control/Command Error", STRING, ""),
    ]


def describe_payload(payload: pb.Payload) -> dict[str, Any]:
    """A decoded payload as plain data (tests, logs)."""
    return {
        "seq": payload.seq if payload.HasField("seq") else None,
        "timestamp": payload.timestamp,
        "metrics": {m.name: metric_value(m) for m in payload.metrics},
    }

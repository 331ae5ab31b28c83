"""Prometheus collectors over a running station, read at scrape time (no double bookkeeping).

``StationCollector``: one station's trigger outcomes and evidence pictures (the figures of
edge/metrics.py's ``_ServiceCollector`` come from the health message). ``StationsCollector``:
every station of a multi-station process in one ``/metrics``, labelled ``station``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.evidence_worker import EvidenceWriter
from edge.triggers import TriggerBook


class StationCollector(Collector):
    """Trigger outcomes and evidence pictures on ``/metrics`` (read at scrape time, like the rest)."""

    def __init__(self, triggers: TriggerBook | None, evidence: EvidenceWriter | None) -> None:
        self._triggers = triggers
        self._evidence = evidence

    def collect(self) -> Iterable[Metric]:
        families: list[Metric] = []
        triggers, evidence = self._triggers, self._evidence
        if triggers is not None:
            outcomes = CounterMetricFamily(
                "inspector_triggers", "Triggers received, by outcome (edge/triggers.py).", labels=["outcome"]
            )
            for outcome, count in sorted(triggers.counts.items()):
                outcomes.add_metric([outcome], count)
            families.append(outcomes)
            families.append(GaugeMetricFamily("inspector_triggers_waiting", "Parts waiting for a frame.",
                                              value=triggers.waiting()))  # fmt: skip
        if evidence is not None:
            pictures = CounterMetricFamily("inspector_evidence", "Evidence pictures, by outcome.", labels=["outcome"])
            for outcome in ("saved", "removed", "failures", "dropped"):
                pictures.add_metric([outcome], getattr(evidence, outcome))
            families.append(pictures)
        return families


class StationsCollector(Collector):
    """Every station's metrics in one ``/metrics``, each sample labelled ``station``; process figures once."""

    def __init__(self, registries: Mapping[str, CollectorRegistry]) -> None:
        self._registries = dict(registries)

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for index, (station, registry) in enumerate(self._registries.items()):
            for family in registry.collect():
                per_process = family.name.startswith(("process_", "python_"))
                if per_process and index > 0:
                    continue
                out = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    labels = sample.labels if per_process else {**sample.labels, "station": station}
                    out.add_sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
        return list(merged.values())

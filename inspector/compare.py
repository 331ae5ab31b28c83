"""Two replays of the same footage (say the bf16 reference and an FP8 engine) compared frame by frame.

The question a quality engineer asks is "is the candidate safe to ship?": it must not miss
defects the reference finds (NG -> OK flips are the dangerous kind), its class probabilities
should stay close, and it should be faster. ``compare_runs`` answers with figures;
``EngineComparison.passes`` applies the gate.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inspector.errors import InspectorError
from inspector.evaluation.predictions import parse_verdict_lines

VERDICTS = ("OK", "NG", "UNCERTAIN")


@dataclass(frozen=True, slots=True)
class _Frame:
    verdict: str
    total_ms: float
    classes: frozenset[str]
    tile_probabilities: tuple[tuple[float, ...], ...] | None  # per tile, classes in sorted order


@dataclass
class EngineComparison:
    reference: str
    candidate: str
    frames_compared: int
    frames_only_in_one: int
    agreement: float  # share of frames with the same verdict
    transitions: dict[str, int]  # "NG->OK": count, reference verdict first
    missed_defects: list[int] = field(default_factory=list)  # frame indices NG in reference, OK in candidate
    class_mismatch_frames: int = 0  # both NG but with different defect classes
    max_prob_diff: float | None = None  # over all tiles and classes
    mean_prob_diff: float | None = None
    latency_ratio: float | None = None  # candidate mean / reference mean (< 1: candidate faster)

    def passes(self, *, max_missed: int = 0, min_agreement: float = 0.98) -> bool:
        return len(self.missed_defects) <= max_missed and self.agreement >= min_agreement

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _frame(payload: dict[str, Any]) -> tuple[tuple[str, int], _Frame]:
    key = (payload["source"]["id"], int(payload["source"]["frame_index"]))
    tiles = payload.get("tiles")
    probabilities = (
        tuple(tuple(t["probabilities"][c] for c in sorted(t["probabilities"])) for t in tiles) if tiles else None
    )
    return key, _Frame(
        payload["verdict"],
        float(payload.get("timings", {}).get("total_ms", 0.0)),
        frozenset(d["class"] for d in payload.get("defects", [])),
        probabilities,
    )


def _read(path: Path) -> dict[tuple[str, int], _Frame]:
    return dict(parse_verdict_lines(path, _frame, missing_hint="pass the --out files of two `inspector replay` runs"))


def compare_runs(reference: Path, candidate: Path) -> EngineComparison:
    ref, cand = _read(reference), _read(candidate)
    shared = sorted(ref.keys() & cand.keys())
    if not shared:
        raise InspectorError(
            f"{reference} and {candidate} share no frame (source id + frame index)",
            "replay the same footage with both engines",
        )
    transitions: Counter[str] = Counter()
    missed: list[int] = []
    mismatched = 0
    diffs: list[np.ndarray] = []
    for key in shared:
        a, b = ref[key], cand[key]
        transitions[f"{a.verdict}->{b.verdict}"] += 1
        if a.verdict == "NG" and b.verdict == "OK":
            missed.append(key[1])
        if a.verdict == b.verdict == "NG" and a.classes != b.classes:
            mismatched += 1
        if a.tile_probabilities and b.tile_probabilities and len(a.tile_probabilities) == len(b.tile_probabilities):
            diffs.append(np.abs(np.asarray(a.tile_probabilities) - np.asarray(b.tile_probabilities)).ravel())
    agree = sum(n for t, n in transitions.items() if t.split("->")[0] == t.split("->")[1])
    ref_ms = np.mean([ref[k].total_ms for k in shared])
    cand_ms = np.mean([cand[k].total_ms for k in shared])
    all_diffs = np.concatenate(diffs) if diffs else None
    return EngineComparison(
        reference=str(reference),
        candidate=str(candidate),
        frames_compared=len(shared),
        frames_only_in_one=len(ref.keys() ^ cand.keys()),
        agreement=agree / len(shared),
        transitions=dict(sorted(transitions.items())),
        missed_defects=missed,
        class_mismatch_frames=mismatched,
        max_prob_diff=float(all_diffs.max()) if all_diffs is not None else None,
        mean_prob_diff=float(all_diffs.mean()) if all_diffs is not None else None,
        latency_ratio=float(cand_ms / ref_ms) if ref_ms > 0 else None,
    )

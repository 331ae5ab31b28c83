"""Tiles -> per-class probabilities (one prefill) and, where the policy asks, an explanation.

The verdict never parses free text: the answer options are single letter tokens and their
next-token logits after the prompt, softmaxed over the options only, are the class
probabilities. Explanations are greedy continuations after the chosen letter, generated
only for the tiles the policy selects, from the prefill's KV state.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inspector.backends.base import PATCHES_PER_TOKEN, Backend, VisualFeatures
from inspector.config import InspectionConfig
from inspector.prompting import Prompt, build_prompt

_THINK_BLOCK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class TileResult:
    probabilities: dict[str, float]
    explanation: str | None = None


@dataclass(slots=True)
class StageTimes:
    vision_ms: float = 0.0
    prefill_ms: float = 0.0
    explain_ms: float = 0.0


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted.astype(np.float64))
    return exp / exp.sum(axis=-1, keepdims=True)


def clean_explanation(text: str) -> str:
    """Drop any think block (a Thinking model's reasoning never leaks into an explanation) and tidy."""
    text = _THINK_BLOCK.sub("", text).replace("</think>", "")
    return " ".join(text.split())


def explained_class(inspection: InspectionConfig, row: np.ndarray) -> int:
    """The class a tile's words are about: the one its verdict reports, so words and defect agree.

    The most probable class at or over its threshold, else within its uncertain band, else the
    most probable (``row``: the tile's probabilities in class order, "ok" first). Calibrated
    thresholds differ per class, so a tile flagged for one class can have another, or "ok", as
    its most probable answer.
    """
    names = list(inspection.defects)  # classes[1:], in order
    thresholds = [inspection.defects[name].threshold for name in names]
    floors = [inspection.uncertain_floor(name) for name in names]
    for bars in (thresholds, floors):
        over = [k + 1 for k, bar in enumerate(bars) if row[k + 1] >= bar]
        if over:
            return max(over, key=lambda k: row[k])
    return int(row.argmax())


@dataclass
class TileClassifier:
    backend: Backend
    tokenizer: Any
    inspection: InspectionConfig
    batch_size: int = 4
    reasoning: bool = False
    max_reasoning_tokens: int = 256
    _prompts: dict[int, Prompt] = field(default_factory=dict, init=False, repr=False)

    def prompt_for(self, image_tokens: int, *, reasoning: bool | None = None) -> Prompt:
        reasoning = self.reasoning if reasoning is None else reasoning
        key = image_tokens * 2 + int(reasoning)
        if key not in self._prompts:
            self._prompts[key] = build_prompt(self.tokenizer, self.inspection, image_tokens, reasoning=reasoning)
        return self._prompts[key]

    def classify(
        self, pixel_values: np.ndarray, grid_thw: tuple[int, int, int], times: StageTimes | None = None
    ) -> list[TileResult]:
        """``pixel_values`` (N, P, 1536) for N same-size tiles -> N results, batched by ``batch_size``."""
        times = times if times is not None else StageTimes()
        results: list[TileResult] = []
        for start in range(0, pixel_values.shape[0], self.batch_size):
            batch = pixel_values[start : start + self.batch_size]
            began = time.perf_counter()
            visual = self.backend.encode(batch, grid_thw)
            times.vision_ms += (time.perf_counter() - began) * 1000
            results.extend(self._classify_batch(visual, times))
        return results

    def _classify_batch(self, visual: VisualFeatures, times: StageTimes) -> list[TileResult]:
        image_tokens = visual.grid_thw[0] * visual.grid_thw[1] * visual.grid_thw[2] // PATCHES_PER_TOKEN
        prompt = self.prompt_for(image_tokens)
        began = time.perf_counter()
        if prompt.reasoning:
            probabilities, state, prompt_ids = self._reason_then_answer(prompt, visual, times)
        else:
            ids = np.broadcast_to(prompt.input_ids, (visual.batch, prompt.length))
            logits, state = self.backend.prefill(ids, visual, prompt.option_ids)
            probabilities = softmax(logits)
            prompt_ids = None
        times.prefill_ms += (time.perf_counter() - began) * 1000

        explanations: dict[int, str] = {}
        rows = self._rows_to_explain(probabilities)
        if rows:
            began = time.perf_counter()
            explanations = self._explain(prompt, probabilities, state, rows, prompt_ids, visual)
            times.explain_ms += (time.perf_counter() - began) * 1000
        classes = prompt.classes
        return [
            TileResult({c: float(p) for c, p in zip(classes, row)}, explanations.get(i))
            for i, row in enumerate(probabilities)
        ]

    def _rows_to_explain(self, probabilities: np.ndarray) -> list[int]:
        policy = self.inspection.explanation
        if policy == "never":
            return []
        if policy == "always":
            return list(range(probabilities.shape[0]))
        # "defects": tiles that are NG or within the uncertain band of some class.
        floors = np.array([self.inspection.uncertain_floor(name) for name in self.inspection.defects])
        return [i for i, row in enumerate(probabilities) if np.any(row[1:] >= floors)]

    def _explain(
        self,
        prompt: Prompt,
        probabilities: np.ndarray,
        state: Any,
        rows: Sequence[int],
        prompt_ids: list[np.ndarray] | None,
        visual: VisualFeatures,
    ) -> dict[int, str]:
        answers = {r: explained_class(self.inspection, probabilities[r]) for r in rows}
        explanations: dict[int, str] = {}
        limit = self.inspection.max_explanation_tokens
        # Rows that chose the same answer share one forced prefix, so they decode as one batch.
        for answer in sorted(set(answers.values())):
            group = [r for r in rows if answers[r] == answer]
            # "taught" words: the class's words are the verdict's, forced; the places are chosen among the taught ones
            head = list(prompt.explanation_heads[answer]) if prompt.explanation_heads else []
            tail = prompt.explanation_tails[answer] if prompt.explanation_tails else None
            forced = [prompt.option_ids[answer], *prompt.explanation_ids, *head]
            if prompt_ids is None:
                generated = self.backend.generate(state, group, forced, limit, prompt.stop_ids, tail)
            else:  # reasoning mode: each row has its own prompt length, so one row per call
                generated = []
                for row in group:
                    ids = prompt_ids[row][None, :]
                    _, row_state = self.backend.prefill(ids, visual.rows([row]), prompt.option_ids)
                    generated += self.backend.generate(row_state, [0], forced, limit, prompt.stop_ids, tail)
            for row, tokens in zip(group, generated):
                explanations[row] = clean_explanation(self.tokenizer.decode(head + tokens, skip_special_tokens=True))
        return explanations

    def _reason_then_answer(
        self, prompt: Prompt, visual: VisualFeatures, times: StageTimes
    ) -> tuple[np.ndarray, Any, list[np.ndarray]]:
        """Thinking models, opt-in: let each tile reason inside <think>, close the block, then read the answer."""
        ids = np.broadcast_to(prompt.input_ids, (visual.batch, prompt.length))
        _, state = self.backend.prefill(ids, visual, prompt.option_ids)
        think_close = self.tokenizer.convert_tokens_to_ids("</think>")
        stops = [*prompt.stop_ids, think_close]
        thoughts = self.backend.generate(state, list(range(visual.batch)), [], self.max_reasoning_tokens, stops)
        logits, full_ids = [], []
        for row, thought in enumerate(thoughts):
            row_ids = np.concatenate([prompt.input_ids, np.asarray(thought, np.int64), prompt.think_close_ids])
            row_logits, _ = self.backend.prefill(row_ids[None, :], visual.rows([row]), prompt.option_ids)
            logits.append(row_logits[0])
            full_ids.append(row_ids)
        return softmax(np.stack(logits)), None, full_ids

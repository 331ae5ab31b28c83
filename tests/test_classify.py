"""One prefill gives class probabilities equal to transformers' own forward; explanations follow policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from inspector.backends.torch import TorchBackend
from inspector.classify import TileClassifier, clean_explanation, explained_class
from inspector.config import InspectionConfig
from inspector.explanation_text import explanation_parts, region
from inspector.models import load_model
from inspector.prompting import build_prompt, mrope_positions

from varied_models import write_varied_tiny_model

TILE = 64
# fp32 on CPU, same weights and inputs, different call paths (we feed precomputed vision
# features; transformers recomputes them): only summation order can differ.
PROB_TOL = 1e-6


def hf_processor() -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(
        patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


def tiles(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (TILE, TILE, 3), dtype=np.uint8) for _ in range(n)]
    out = hf_processor()(images=images, return_tensors="np")
    flat, grid = out["pixel_values"], out["image_grid_thw"]
    return flat.reshape(n, -1, flat.shape[-1]).astype(np.float32), grid, tuple(int(v) for v in grid[0])


def reference_probabilities(loaded, prompt, flat, grid, n: int) -> np.ndarray:
    return reference_probabilities_for(loaded, np.stack([prompt.input_ids] * n), prompt, flat, grid)


def reference_probabilities_for(loaded, input_ids: np.ndarray, prompt, flat, grid) -> np.ndarray:
    """transformers' own forward on (n, L) ids: softmax of the last position's logits over the options."""
    ids = torch.from_numpy(np.ascontiguousarray(input_ids))
    with torch.inference_mode():
        out = loaded.model(
            input_ids=ids,
            pixel_values=torch.from_numpy(flat.reshape(-1, flat.shape[-1])),
            image_grid_thw=torch.from_numpy(grid),
            mm_token_type_ids=(ids == prompt.image_token_id).int(),
        )
    return torch.softmax(out.logits[:, -1, list(prompt.option_ids)].double(), -1).numpy()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_probabilities_sum_to_one_and_match_transformers(tiny_loaded, inspection, batch_size: int) -> None:
    pixel_values, grid, grid_thw = tiles(3)
    classifier = TileClassifier(TorchBackend(tiny_loaded), tiny_loaded.tokenizer, inspection, batch_size=batch_size)
    results = classifier.classify(pixel_values, grid_thw)
    ours = np.array([[r.probabilities[c] for c in inspection.classes] for r in results])
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-9)
    prompt = classifier.prompt_for(grid_thw[1] * grid_thw[2] // 4)
    reference = reference_probabilities(tiny_loaded, prompt, pixel_values, grid, 3)
    assert np.abs(ours - reference).max() <= PROB_TOL
    assert list(results[0].probabilities) == inspection.classes


def test_host_mrope_equals_transformers(tiny_loaded, inspection) -> None:
    prompt = build_prompt(tiny_loaded.tokenizer, inspection, 16)
    ids = torch.from_numpy(prompt.input_ids[None])
    expected, delta = tiny_loaded.model.model.get_rope_index(
        ids, mm_token_type_ids=(ids == prompt.image_token_id).int(), image_grid_thw=torch.tensor([[1, 8, 8]])
    )
    ours, our_delta = mrope_positions(prompt.input_ids, prompt.image_token_id, (1, 8, 8))
    np.testing.assert_array_equal(ours, expected[:, 0].numpy())
    assert our_delta == int(delta)


def test_prompt_lists_every_class_with_single_token_letters(tiny_loaded, inspection) -> None:
    prompt = build_prompt(tiny_loaded.tokenizer, inspection, 4)
    text = tiny_loaded.tokenizer.decode(prompt.input_ids)
    for letter, name in zip("ABCD", inspection.classes):
        assert f"{letter}. {name}:" in text
    assert len(set(prompt.option_ids)) == len(inspection.classes)
    assert int((prompt.input_ids == prompt.image_token_id).sum()) == 4
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(("policy", "expect_all"), [("never", False), ("always", True)])
def test_explanation_policy(tiny_loaded, inspection, policy: str, expect_all: bool) -> None:
    rules = inspection.model_copy(update={"explanation": policy, "max_explanation_tokens": 5})
    pixel_values, _, grid_thw = tiles(2)
    results = TileClassifier(TorchBackend(tiny_loaded), tiny_loaded.tokenizer, rules).classify(pixel_values, grid_thw)
    assert all((r.explanation is not None) == expect_all for r in results)


def test_defects_policy_explains_only_suspect_tiles(tiny_loaded, inspection) -> None:
    # Thresholds so low every tile is NG, then so high none is: the policy follows.
    pixel_values, _, grid_thw = tiles(2)
    low = inspection.model_copy(
        update={"defects": {k: v.model_copy(update={"threshold": 0.01}) for k, v in inspection.defects.items()}}
    )
    backend = TorchBackend(tiny_loaded)
    assert all(
        r.explanation is not None
        for r in TileClassifier(backend, tiny_loaded.tokenizer, low).classify(pixel_values, grid_thw)
    )
    high = inspection.model_copy(
        update={
            "uncertain_band": 0.0,
            "defects": {k: v.model_copy(update={"threshold": 1.0}) for k, v in inspection.defects.items()},
        }
    )
    assert all(
        r.explanation is None
        for r in TileClassifier(backend, tiny_loaded.tokenizer, high).classify(pixel_values, grid_thw)
    )


def test_explanation_is_greedy_continuation_after_answer(varied_loaded, inspection) -> None:
    """The KV-cache decode equals transformers' generate() on prompt + answer + explanation lead.

    On a model whose greedy decode varies (tests/varied_models.py): the default tiny model
    repeats one token, which a broken cache or position would repeat just the same.
    """
    tokens = 12
    rules = inspection.model_copy(
        update={"explanation": "always", "explanation_words": "free", "max_explanation_tokens": tokens}
    )
    pixel_values, grid, grid_thw = tiles(1)
    backend = TorchBackend(varied_loaded)
    classifier = TileClassifier(backend, varied_loaded.tokenizer, rules)
    prompt = classifier.prompt_for(grid_thw[1] * grid_thw[2] // 4)
    visual = backend.encode(pixel_values, grid_thw)
    logits, state = backend.prefill(prompt.input_ids[None], visual, prompt.option_ids)
    forced = [prompt.option_ids[int(logits.argmax())], *prompt.explanation_ids]
    ours = backend.generate(state, [0], forced, tokens, prompt.stop_ids)[0]
    full = torch.from_numpy(np.concatenate([prompt.input_ids, forced])[None])
    with torch.inference_mode():
        generated = varied_loaded.model.generate(
            input_ids=full,
            pixel_values=torch.from_numpy(pixel_values[0]),
            image_grid_thw=torch.from_numpy(grid),
            mm_token_type_ids=(full == prompt.image_token_id).int(),
            max_new_tokens=tokens,
            do_sample=False,
            eos_token_id=list(prompt.stop_ids),
        )
    expected = [t for t in generated[0, full.shape[1] :].tolist() if t not in prompt.stop_ids]
    assert len(set(expected)) >= tokens // 2  # not degenerate: the comparison below can fail
    assert ours == expected
    # And through the classifier: the explanation is that continuation, decoded.
    (result,) = classifier.classify(pixel_values, grid_thw)
    assert result.explanation == clean_explanation(varied_loaded.tokenizer.decode(ours, skip_special_tokens=True))


def test_taught_words_force_the_class_and_choose_a_place_as_transformers_constrained_generate_does(
    varied_loaded, inspection
) -> None:
    """ "taught" words: the verdict's class words are forced, then each step takes the model's best
    allowed token (``prefix_allowed_tokens_fn`` in transformers' generate is the reference), so the
    text is always "<class>: <description>, <region>, <size>" and the place is the model's choice."""
    rules = inspection.model_copy(update={"explanation": "always"})
    pixel_values, grid, grid_thw = tiles(3, seed=4)
    backend = TorchBackend(varied_loaded)
    classifier = TileClassifier(backend, varied_loaded.tokenizer, rules)
    prompt = classifier.prompt_for(grid_thw[1] * grid_thw[2] // 4)
    visual = backend.encode(pixel_values, grid_thw)
    ids = np.broadcast_to(prompt.input_ids, (3, prompt.length))
    logits, state = backend.prefill(ids, visual, prompt.option_ids)
    tokenizer = varied_loaded.tokenizer
    places = set()
    for label in range(1, len(prompt.classes)):  # every defect class, whatever these tiles' verdicts
        head, tail = list(prompt.explanation_heads[label]), prompt.explanation_tails[label]
        forced = [prompt.option_ids[label], *prompt.explanation_ids, *head]
        ours = backend.generate(state, [0, 1, 2], forced, 48, prompt.stop_ids, tail)
        for row, tokens in enumerate(ours):
            full = torch.from_numpy(np.concatenate([prompt.input_ids, forced])[None])
            with torch.inference_mode():
                generated = varied_loaded.model.generate(
                    input_ids=full,
                    pixel_values=torch.from_numpy(pixel_values[row]),
                    image_grid_thw=torch.from_numpy(grid[:1]),
                    mm_token_type_ids=(full == prompt.image_token_id).int(),
                    max_new_tokens=48,
                    do_sample=False,
                    eos_token_id=list(prompt.stop_ids),
                    prefix_allowed_tokens_fn=lambda _, seq: list(tail.allowed(seq[full.shape[1] :].tolist())),
                )
            assert tokens == [t for t in generated[0, full.shape[1] :].tolist() if t not in prompt.stop_ids]
            text = clean_explanation(tokenizer.decode(head + tokens, skip_special_tokens=True))
            name, region_words, size = (part.strip() for part in text.split(","))
            assert name == explanation_parts(inspection, label, None)[0]  # "<class>: <description>"
            assert region_words in {region((x / 3 + 0.1, y / 3 + 0.1)) for x in range(3) for y in range(3)}
            assert size in {"small", "medium", "large"}
            places.add((region_words, size))
    assert len(places) > 1  # the choice follows the model's scores, not a fixed default
    results = classifier.classify(pixel_values, grid_thw)
    for result in results:
        spoken = explained_class(rules, np.array([result.probabilities[c] for c in prompt.classes]))
        assert result.explanation.startswith(explanation_parts(inspection, spoken, None)[0])


@given(st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4))
def test_the_words_are_about_the_class_the_verdict_reports(weights) -> None:
    """A calibrated station's thresholds differ per class: the words name the flagged class, never a
    more probable one that is not flagged (nor "ok" for a tile flagged NG)."""
    rules = InspectionConfig(
        product="a panel",
        defects={"scratch": {"description": "a line", "threshold": 0.2},
                 "spot": {"description": "a blob", "threshold": 0.6},
                 "crack": {"description": "a fracture", "threshold": 0.9}},
        uncertain_band=0.1,
    )  # fmt: skip
    row = np.array(weights) / max(sum(weights), 1e-9)
    spoken = explained_class(rules, row)
    names = list(rules.defects)
    flagged = [k + 1 for k, n in enumerate(names) if row[k + 1] >= rules.defects[n].threshold]
    near = [k + 1 for k, n in enumerate(names) if row[k + 1] >= rules.uncertain_floor(n)]
    if flagged:
        assert spoken in flagged and row[spoken] == max(row[k] for k in flagged)
    elif near:
        assert spoken in near and row[spoken] == max(row[k] for k in near)
    else:
        assert spoken == int(row.argmax())


def test_clean_explanation_strips_think_blocks() -> None:
    assert clean_explanation("<think>secret reasoning</think> A  long\nscratch") == "A long scratch"
    assert clean_explanation("visible <think>unterminated") == "visible"


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory: pytest.TempPathFactory):
    """A Thinking-template model whose greedy decode varies, so its thoughts are real tokens."""
    return load_model(str(write_varied_tiny_model(tmp_path_factory.mktemp("thinking") / "m", thinking=True)))


class RecordingBackend(TorchBackend):
    """The real torch backend, keeping what the classifier asked of it and what came back."""

    def __init__(self, loaded) -> None:
        super().__init__(loaded)
        self.prefilled: list[np.ndarray] = []
        self.generated: list[tuple[list[int], int, set[int], list[list[int]]]] = []

    def prefill(self, input_ids, visual, option_ids):
        self.prefilled.append(np.array(input_ids))
        return super().prefill(input_ids, visual, option_ids)

    def generate(self, state, rows, forced_ids, max_new_tokens, stop_ids):
        out = super().generate(state, rows, forced_ids, max_new_tokens, stop_ids)
        self.generated.append((list(forced_ids), max_new_tokens, set(stop_ids), out))
        return out


def test_thinking_model_answers_after_an_empty_think_block(thinking_model, inspection) -> None:
    prompt = build_prompt(thinking_model.tokenizer, inspection, 4)
    assert prompt.thinking_template and not prompt.reasoning
    assert thinking_model.tokenizer.decode(prompt.input_ids).endswith("assistant\n<think>\n\n</think>\n\n")


def test_thinking_model_reasoning_mode_never_leaks(thinking_model, inspection) -> None:
    rules = inspection.model_copy(update={"explanation": "always", "max_explanation_tokens": 6})
    pixel_values, _, grid_thw = tiles(2)
    classifier = TileClassifier(
        TorchBackend(thinking_model), thinking_model.tokenizer, rules, reasoning=True, max_reasoning_tokens=5
    )
    prompt = classifier.prompt_for(grid_thw[1] * grid_thw[2] // 4)
    assert prompt.reasoning and thinking_model.tokenizer.decode(prompt.input_ids).endswith("<think>\n")
    results = classifier.classify(pixel_values, grid_thw)
    for result in results:
        assert abs(sum(result.probabilities.values()) - 1) < 1e-9
        assert result.explanation is not None and "think>" not in result.explanation


def test_reasoning_mode_thinks_then_reads_the_answer_after_think_close(thinking_model, inspection) -> None:
    rules = inspection.model_copy(update={"explanation": "never"})
    pixel_values, grid, grid_thw = tiles(2)
    backend = RecordingBackend(thinking_model)
    tokenizer = thinking_model.tokenizer
    classifier = TileClassifier(backend, tokenizer, rules, reasoning=True, max_reasoning_tokens=5)
    prompt = classifier.prompt_for(grid_thw[1] * grid_thw[2] // 4)
    results = classifier.classify(pixel_values, grid_thw)

    # Thoughts: one decode from the prompt (inside the open <think>), nothing forced, bounded, stopping at </think>.
    ((forced, limit, stops, thoughts),) = backend.generated
    assert forced == [] and limit == 5 and tokenizer.convert_tokens_to_ids("</think>") in stops
    assert [len(t) for t in thoughts] == [5, 5]  # this model thinks for its whole budget
    # The answer: read again, per tile, after prompt + its thought + "</think>\n\n".
    assert len(backend.prefilled) == 1 + len(thoughts)
    np.testing.assert_array_equal(backend.prefilled[0], np.broadcast_to(prompt.input_ids, (2, prompt.length)))
    ours = np.array([[r.probabilities[c] for c in inspection.classes] for r in results])
    flat = pixel_values.reshape(2, -1, pixel_values.shape[-1])
    for row, (thought, ids) in enumerate(zip(thoughts, backend.prefilled[1:])):
        expected = np.concatenate([prompt.input_ids, thought, prompt.think_close_ids])[None]
        np.testing.assert_array_equal(ids, expected)
        assert tokenizer.decode(ids[0, -len(prompt.think_close_ids) :]) == "</think>\n\n"
        reference = reference_probabilities_for(thinking_model, ids, prompt, flat[row : row + 1], grid[row : row + 1])
        assert np.abs(ours[row] - reference[0]).max() <= PROB_TOL
    # Reading at the prompt's end, before any thought, gives other numbers: the re-read is what counts.
    before = reference_probabilities(thinking_model, prompt, pixel_values, grid, 2)
    assert np.abs(ours - before).max() > 1e-3

"""One prefill gives class probabilities equal to transformers' own forward; explanations follow policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from inspector.backends.torch import TorchBackend
from inspector.classify import TileClassifier, clean_explanation
from inspector.models import load_model, write_tiny_model
from inspector.prompting import build_prompt, mrope_positions

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
    ids = torch.from_numpy(np.stack([prompt.input_ids] * n))
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


def test_explanation_is_greedy_continuation_after_answer(tiny_loaded, inspection) -> None:
    """The KV-cache decode equals transformers' generate() on prompt + answer + explanation lead."""
    rules = inspection.model_copy(update={"explanation": "always", "max_explanation_tokens": 8})
    pixel_values, grid, grid_thw = tiles(1)
    backend = TorchBackend(tiny_loaded)
    classifier = TileClassifier(backend, tiny_loaded.tokenizer, rules)
    prompt = classifier.prompt_for(grid_thw[1] * grid_thw[2] // 4)
    visual = backend.encode(pixel_values, grid_thw)
    logits, state = backend.prefill(prompt.input_ids[None], visual, prompt.option_ids)
    forced = [prompt.option_ids[int(logits.argmax())], *prompt.explanation_ids]
    ours = backend.generate(state, [0], forced, 8, prompt.stop_ids)[0]
    full = torch.from_numpy(np.concatenate([prompt.input_ids, forced])[None])
    with torch.inference_mode():
        generated = tiny_loaded.model.generate(
            input_ids=full,
            pixel_values=torch.from_numpy(pixel_values[0]),
            image_grid_thw=torch.from_numpy(grid),
            mm_token_type_ids=(full == prompt.image_token_id).int(),
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=list(prompt.stop_ids),
        )
    expected = [t for t in generated[0, full.shape[1] :].tolist() if t not in prompt.stop_ids]
    assert ours == expected[: len(ours)] and len(ours) == len(expected)


def test_clean_explanation_strips_think_blocks() -> None:
    assert clean_explanation("<think>secret reasoning</think> A  long\nscratch") == "A long scratch"
    assert clean_explanation("visible <think>unterminated") == "visible"


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory: pytest.TempPathFactory):
    return load_model(
        str(write_tiny_model(tmp_path_factory.mktemp("thinking") / "m", thinking=True, vocabulary="trained"))
    )


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

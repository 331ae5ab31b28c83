"""What training optimises: exactly the numbers inference softmaxes.

Inference asks the station's own prompt (``inspector.prompting.build_prompt``) and reads the
next-token logits of the answer letters at the last prompt position (``logits_to_keep=1``).
The verdict loss is the cross-entropy over those option logits. The optional explanation
loss teaches the words the classifier generates after the forced "<letter>\\nExplanation:".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inspector.config import InspectionConfig
from inspector.prompting import Prompt, build_prompt, explanation_part_ids
from inspector.vision import grid_for, patchify


@dataclass(frozen=True)
class TrainingPrompt:
    """The inference prompt for one tile size plus the ids the explanation loss needs."""

    prompt: Prompt
    tile: int
    end_id: int  # <|im_end|>: an explanation ends there

    @classmethod
    def build(cls, tokenizer: Any, inspection: InspectionConfig, tile: int) -> TrainingPrompt:
        grid = grid_for(tile)
        image_tokens = grid[0] * grid[1] * grid[2] // 4
        prompt = build_prompt(tokenizer, inspection, image_tokens)
        end_id = int(tokenizer.convert_tokens_to_ids("<|im_end|>"))
        return cls(prompt, tile, end_id)


def model_inputs(model: Any, training_prompt: TrainingPrompt, tiles_rgb: np.ndarray, suffix: Any = None) -> dict:
    """Keyword arguments for ``model(...)``: the prompt per tile (+ optional suffix ids), pixels, grid."""
    import torch

    device = next(model.parameters()).device
    pixel_values, grid = patchify(np.ascontiguousarray(tiles_rgb), min_pixels=0)
    batch = pixel_values.shape[0]
    ids = torch.from_numpy(training_prompt.prompt.input_ids).to(device)[None].expand(batch, -1)
    if suffix is not None:
        ids = torch.cat([ids, suffix.to(device)], dim=1)
    visual_dtype = model.get_input_embeddings().weight.dtype
    return {
        "input_ids": ids,
        "pixel_values": torch.from_numpy(pixel_values).reshape(-1, pixel_values.shape[-1]).to(device, visual_dtype),
        "image_grid_thw": torch.tensor([grid] * batch, dtype=torch.long, device=device),
        "mm_token_type_ids": (ids == training_prompt.prompt.image_token_id).to(torch.int32),
    }


def option_logits(model: Any, training_prompt: TrainingPrompt, tiles_rgb: np.ndarray, head_rows: Any = None) -> Any:
    """(B, classes) logits of the answer letters at the answer position: what inference softmaxes.

    The LM head is applied to the last position only (``logits_to_keep=1``) and only for the
    option letters' rows: the same dot products as the full head's, without the other 151,931
    rows (the full head's matmul and its backward were half of a demo training step).
    """
    core = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps in place
    out = core.model(**model_inputs(model, training_prompt, tiles_rgb), use_cache=False)
    head = core.get_output_embeddings()
    rows = list(training_prompt.prompt.option_ids)
    weight = head.weight[rows] if head_rows is None else head_rows  # head_rows: trained letters (option_rows)
    logits = out.last_hidden_state[:, -1] @ weight.T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[rows]
    return logits.float()


def verdict_loss(logits: Any, labels: Any, *, binary: bool = False) -> Any:
    """Cross-entropy over the options; ``binary``: ok vs any defect (the defect mass summed), a warm-up."""
    import torch
    import torch.nn.functional as F

    if not binary:
        return F.cross_entropy(logits, labels)
    two = torch.stack([logits[:, 0], torch.logsumexp(logits[:, 1:], dim=-1)], dim=-1)
    return F.cross_entropy(two, (labels > 0).long())


@dataclass(frozen=True)
class ExplanationBatch:
    """The taught explanation of each tile of a batch, as the suffix fed after the prompt.

    ``ids`` (B, S): letter, "\\nExplanation:", text, <|im_end|> (right-padded); ``mask`` (B, S): the
    suffix tokens the loss teaches; ``choices`` (B, S, K): for "taught" words, the ids a decode may
    pick at each taught position (-1 pads), so the loss is over what inference chooses among; None
    for "free" words (the whole vocabulary).
    """

    ids: Any
    mask: Any
    choices: Any = None


def explanation_batch(
    tokenizer: Any, training_prompt: TrainingPrompt, texts: Sequence[tuple[str, str]], labels: Any
) -> ExplanationBatch:
    """The suffix for ``texts``: (the words the letter implies, the words only the image tells) per tile
    (``explanation_parts``), each part tokenised on its own as inference forces and decodes them.

    "taught" words (``Prompt.explanation_tails``): the implied words are forced at inference, so only
    the places are taught, at the positions where the decode has a choice. "free": every word.
    """
    import torch

    prompt = training_prompt.prompt
    rows, heads = [], []
    for parts, label in zip(texts, labels.tolist()):
        head, tail = explanation_part_ids(tokenizer, parts)
        rows.append([prompt.option_ids[label], *prompt.explanation_ids, *head, *tail, training_prompt.end_id])
        heads.append(len(head))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), training_prompt.end_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    forced = 1 + len(prompt.explanation_ids)  # the letter and the lead are forced at inference, not learnt
    if not prompt.explanation_tails:
        for i, (row, label) in enumerate(zip(rows, labels.tolist())):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, forced : len(row)] = label > 0  # words are generated for NG tiles only: teach those
        return ExplanationBatch(ids, mask)
    options: dict[tuple[int, int], tuple[int, ...]] = {}
    for i, (row, head, label) in enumerate(zip(rows, heads, labels.tolist())):
        ids[i, : len(row)] = torch.tensor(row)
        start = forced + head
        for k in range(start, len(row)):
            allowed = prompt.explanation_tails[label].allowed(row[start:k])
            if len(allowed) > 1:
                options[i, k] = allowed
    choices = torch.full((len(rows), width, max(map(len, options.values()), default=1)), -1, dtype=torch.long)
    for (i, k), allowed in options.items():
        mask[i, k] = True
        choices[i, k, : len(allowed)] = torch.tensor(allowed)
    return ExplanationBatch(ids, mask, choices)


def taught_word_ids(tokenizer: Any, training_prompt: TrainingPrompt, texts: Sequence[tuple[str, str]]) -> list[int]:
    """The token ids the explanation loss can ask for (tokenised as ``explanation_batch`` does), <|im_end|> included."""
    ids: set[int] = {training_prompt.end_id}
    for parts in texts:
        for part in explanation_part_ids(tokenizer, parts):
            ids.update(part)
    return sorted(ids)


def verdict_and_explanation_loss(
    model: Any, training_prompt: TrainingPrompt, tiles_rgb: np.ndarray, labels: Any, words: ExplanationBatch,
    *, binary: bool = False, head_rows: Any = None,
) -> tuple[Any, Any]:  # fmt: skip
    """One forward over prompt + suffix: the verdict loss at the answer position and the explanation loss
    (the mean over the taught tokens; with ``words.choices``, each over the ids the decode picks among).

    The LM head is applied only at the positions whose next token is taught (``mask``), not at
    every suffix position of every tile: the full 151,936-row head is most of the cost.
    """
    import torch.nn.functional as F

    suffix, mask = words.ids, words.mask
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = core.model(**model_inputs(model, training_prompt, tiles_rgb, suffix), use_cache=False)
    hidden = out.last_hidden_state
    answer = hidden.shape[1] - suffix.shape[1] - 1  # the last prompt position
    head = core.get_output_embeddings()
    weight = head.weight[list(training_prompt.prompt.option_ids)] if head_rows is None else head_rows
    verdict = verdict_loss((hidden[:, answer] @ weight.T).float(), labels, binary=binary)
    # Position answer + k predicts suffix[k]: the letter (forced at inference), then the words.
    mask = mask.to(hidden.device)
    taught = hidden[:, answer:-1][mask]
    target = suffix.to(hidden.device)[mask]
    if not taught.shape[0]:
        return verdict, verdict.new_zeros(())
    logits = head(taught).float()  # through the head module, so trained word rows (option_rows) count
    if words.choices is None:
        return verdict, F.cross_entropy(logits, target)
    choices = words.choices.to(hidden.device)[mask]  # (N, K), -1 pads
    picked = logits.gather(1, choices.clamp_min(0)).masked_fill(choices < 0, float("-inf"))
    return verdict, F.cross_entropy(picked, (choices == target[:, None]).float().argmax(1))

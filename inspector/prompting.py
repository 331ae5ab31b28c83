"""The question asked per tile, as token ids, and the host-side M-RoPE positions for it.

Answer options are letters (A = ok, B.. = defect classes): each is one token in Qwen's
vocabulary, so one prefill's next-token logits over those ids give a probability per
class, with no free-text parsing. The prompt text comes from the checkpoint's own chat
template, so Instruct and Thinking checkpoints each get the turn format they were trained on.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

import numpy as np

from inspector.config import InspectionConfig
from inspector.errors import ModelError
from inspector.explanation_text import explanation_parts, taught_texts
from inspector.token_trie import TokenTrie

IMAGE_PAD = "<|image_pad|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# Text forced after the answer letter so the model goes on to say why.
EXPLANATION_LEAD = "\nExplanation:"


@dataclass(frozen=True, slots=True)
class Prompt:
    """Token ids for one tile's question; every tile of a batch shares them."""

    input_ids: np.ndarray  # (L,) int64, with ``image_tokens`` placeholders
    image_token_id: int
    image_tokens: int
    classes: tuple[str, ...]
    option_ids: tuple[int, ...]  # one id per class, in class order
    explanation_ids: tuple[int, ...]
    # explanation_words "taught": per class, the ids forced after the lead (the words the letter implies)
    # and the trie of what may follow them (the taught places, then <|im_end|>); empty for "free".
    explanation_heads: tuple[tuple[int, ...], ...]
    explanation_tails: tuple[TokenTrie, ...]
    stop_ids: tuple[int, ...]
    think_close_ids: tuple[int, ...]  # ids of "</think>\n\n" (reasoning mode closes the block with it)
    thinking_template: bool  # the chat template opens a <think> block for the assistant
    reasoning: bool  # the prompt ends inside an open <think> block

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


def question_text(inspection: InspectionConfig) -> str:
    letters = string.ascii_uppercase
    lines = [
        f"You are inspecting a close-up of {inspection.product} on a production line.",
        "Which option describes this image best?",
        f"{letters[0]}. ok: {inspection.ok_description}",
    ]
    for letter, (name, defect) in zip(letters[1:], inspection.defects.items()):
        lines.append(f"{letter}. {name}: {defect.description}")
    lines.append("Answer with the option's letter only.")
    return "\n".join(lines)


def _single_token(tokenizer: Any, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ModelError(f"the tokenizer splits {text!r} into {len(ids)} tokens; answer options need one each")
    return int(ids[0])


def build_prompt(tokenizer: Any, inspection: InspectionConfig, image_tokens: int, *, reasoning: bool = False) -> Prompt:
    """Render the chat template for one image + the question, expand the image placeholder to ``image_tokens``."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question_text(inspection)}]}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str) or text.count(IMAGE_PAD) != 1:
        raise ModelError("the checkpoint's chat template does not place exactly one <|image_pad|> for one image")
    thinking_template = text.rstrip("\n").endswith(THINK_OPEN)
    if thinking_template and not reasoning:
        # An empty think block: answer straight away (Qwen3's non-thinking convention).
        text = text.rstrip("\n") + "\n\n" + THINK_CLOSE + "\n\n"
    before, after = text.split(IMAGE_PAD)
    image_token_id = _single_token(tokenizer, IMAGE_PAD)
    ids = (
        tokenizer.encode(before, add_special_tokens=False)
        + [image_token_id] * image_tokens
        + tokenizer.encode(after, add_special_tokens=False)
    )
    classes = tuple(inspection.classes)
    options = tuple(_single_token(tokenizer, letter) for letter in string.ascii_uppercase[: len(classes)])
    end_id = _single_token(tokenizer, "<|im_end|>")
    stops = {end_id, _single_token(tokenizer, "<|endoftext|>")}
    if tokenizer.eos_token_id is not None:
        stops.add(int(tokenizer.eos_token_id))
    return Prompt(
        input_ids=np.asarray(ids, dtype=np.int64),
        image_token_id=image_token_id,
        image_tokens=image_tokens,
        classes=classes,
        option_ids=options,
        explanation_ids=tuple(tokenizer.encode(EXPLANATION_LEAD, add_special_tokens=False)),
        **_taught_explanations(tokenizer, inspection, end_id),
        stop_ids=tuple(sorted(stops)),
        think_close_ids=tuple(tokenizer.encode(THINK_CLOSE + "\n\n", add_special_tokens=False)),
        thinking_template=thinking_template,
        reasoning=thinking_template and reasoning,
    )


def explanation_part_ids(tokenizer: Any, parts: tuple[str, str]) -> tuple[list[int], list[int]]:
    """Token ids of an explanation's two parts (``explanation_parts``), each tokenised on its own, as
    inference forces the first (after the lead, so with a space) and decodes the second; training
    tokenises its targets with this too, so both see the same ids."""
    implied, seen = parts
    head = tokenizer.encode(" " + implied, add_special_tokens=False)
    return head, tokenizer.encode(seen, add_special_tokens=False) if seen else []


def _taught_explanations(tokenizer: Any, inspection: InspectionConfig, end_id: int) -> dict[str, tuple]:
    """``explanation_heads`` and ``explanation_tails`` for ``explanation_words``, tokenised as training
    tokenises the taught text (``explanation_part_ids``)."""
    if inspection.explanation_words == "free":
        return {"explanation_heads": (), "explanation_tails": ()}
    heads = tuple(
        tuple(explanation_part_ids(tokenizer, explanation_parts(inspection, label, None))[0])
        for label in range(len(inspection.classes))
    )
    places = TokenTrie.of([*explanation_part_ids(tokenizer, parts)[1], end_id] for parts in taught_texts(inspection))
    return {"explanation_heads": heads, "explanation_tails": (TokenTrie.of([[end_id]]),) + (places,) * (len(heads) - 1)}


def mrope_positions(
    input_ids: np.ndarray, image_token_id: int, grid_thw: tuple[int, int, int], spatial_merge: int = 2
) -> tuple[np.ndarray, int]:
    """Qwen3-VL's 3-D (t, h, w) positions for one sequence with one image, computed on the host.

    Text tokens advance all three axes together; the image's tokens take (start, start+row,
    start+col) on the merged grid, and text after it resumes at start + max(rows, cols).
    Returns positions (3, L) and the delta to add to a plain index for later tokens.
    """
    ids = np.asarray(input_ids)
    image_at = np.flatnonzero(ids == image_token_id)
    rows, cols = grid_thw[1] // spatial_merge, grid_thw[2] // spatial_merge
    if image_at.size != rows * cols * grid_thw[0] or (image_at.size and np.any(np.diff(image_at) != 1)):
        raise ValueError("the prompt must hold one contiguous run of image tokens matching the grid")
    positions = np.empty((3, ids.shape[0]), dtype=np.int64)
    start = int(image_at[0]) if image_at.size else ids.shape[0]
    positions[:, :start] = np.arange(start)
    end = start + image_at.size
    if image_at.size:
        t, h, w = np.meshgrid(np.arange(grid_thw[0]), np.arange(rows), np.arange(cols), indexing="ij")
        positions[0, start:end] = start + t.ravel()
        positions[1, start:end] = start + h.ravel()
        positions[2, start:end] = start + w.ravel()
    resume = start + max(rows, cols) if image_at.size else start
    positions[:, end:] = resume + np.arange(ids.shape[0] - end)
    delta = int(positions.max()) + 1 - ids.shape[0]
    return positions, delta

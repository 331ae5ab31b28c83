"""Qwen3-VL tokenizers built offline: Qwen's real vocabulary from its BPE ranks, or a small trained stand-in.

The tokenizer is Qwen's own vocabulary where its BPE ranks are installed (they ship as
``dashscope/resources/qwen.tiktoken`` in the ``dashscope`` wheel: ``pip install --no-deps
dashscope``), so prompts get the very token ids a real checkpoint sees; without them, a
small byte-level BPE trained offline in well under a second stands in. Both carry Qwen's
special tokens at their real ids and the Qwen3-VL chat template.
"""

from __future__ import annotations

import base64
import json
from importlib import metadata
from pathlib import Path
from typing import Literal, get_args

from inspector.errors import ModelError

# Qwen's added tokens from <|endoftext|> (151643) to </think> (151668), in id order.
QWEN_ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)  # fmt: skip
FIRST_ADDED_ID = 151643
QWEN_VOCAB_SIZE = 151936
# <think> / </think> are ordinary added tokens in Qwen3 (decoded as text), the rest are special.
_NON_SPECIAL = {"<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"}

# Qwen's BPE ranks (tiktoken format: one "base64(token) rank" per line, ranks 0..151642),
# as the dashscope wheel installs them.
QWEN_RANKS_RESOURCE = "dashscope/resources/qwen.tiktoken"
QWEN_RANKS_INSTALL = "pip install --no-deps dashscope"
# "auto": Qwen's vocabulary where its ranks are installed, else the offline-trained stand-in.
Vocabulary = Literal["auto", "qwen", "trained"]
VOCABULARIES: tuple[str, ...] = get_args(Vocabulary)

# The Qwen3-VL chat template, cut down to what a single-image user turn needs.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif content['type'] == 'text' %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Qwen3-VL-*-Thinking opens the reasoning block in the generation prompt.
THINKING_CHAT_TEMPLATE = CHAT_TEMPLATE.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'")

# Text the tiny tokenizer learns its merges from: the prompt vocabulary plus plain English.
_TOKENIZER_CORPUS = """\
You are a quality inspector on a production line. Look at the image of the product surface.
Answer with the letter of the one option that best describes it. Options: A) ok no visible defect
B) scratch a thin line C) spot a stain or dark blob D) crack a jagged fracture E) missing piece.
The part shows a scratch near the edge. The surface is clean and has no defect. Explanation:
a dent, burr, chip, contamination, discoloration, deformation, porosity, weld, solder, label.
0 1 2 3 4 5 6 7 8 9 the of and to in is it that was for on are as with his they at be this from
"""


def build_tiny_tokenizer(merges: int = 600, *, thinking: bool = False):
    """A real ``Qwen2Tokenizer`` (byte-level BPE, Qwen's pre-tokenizer) trained offline in well under a second.

    The learned vocabulary is padded with unreachable placeholders so Qwen's added tokens
    land on their real ids (151643...).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=256 + merges, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    trainer_tok.train_from_iterator(_TOKENIZER_CORPUS.splitlines() * 4, trainer)
    state = json.loads(trainer_tok.to_str())["model"]
    vocab: dict[str, int] = dict(state["vocab"])
    learned_merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    for filler in range(len(vocab), FIRST_ADDED_ID):
        vocab[f"<|reserved_{filler}|>"] = filler
    return _qwen_tokenizer(vocab, learned_merges, thinking=thinking)


def qwen_ranks_file() -> Path | None:
    """Qwen's BPE ranks file if the ``dashscope`` wheel is installed, else None.

    Found through the wheel's metadata, without importing dashscope: its many dependencies
    are not needed to read one file.
    """
    try:
        distribution = metadata.distribution("dashscope")
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(QWEN_RANKS_RESOURCE)))
    return path if path.is_file() else None


def build_qwen_tokenizer(ranks_file: Path | None = None, *, thinking: bool = False):
    """Qwen's real tokenizer from its BPE ranks: every id below 151643 is Qwen's, then its added tokens.

    transformers' own tiktoken converter derives the merges (every split of a token into two
    ranked pieces, in rank order: tiktoken's merge priority), so it tokenizes as tiktoken does.
    Takes about 2 s. Raises ``ModelError`` when the ranks are absent or are not Qwen's.
    """
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = ranks_file or qwen_ranks_file()
    if path is None or not Path(path).is_file():
        where = f"{ranks_file} does not exist" if ranks_file else f"{QWEN_RANKS_RESOURCE} is not installed"
        raise ModelError(
            f"Qwen's BPE ranks are missing: {where}",
            f"run `{QWEN_RANKS_INSTALL}`, or use the offline-trained vocabulary",
        )
    ranks = _read_tiktoken_ranks(Path(path))
    if sorted(ranks.values()) != list(range(FIRST_ADDED_ID)):
        raise ModelError(
            f"{path} does not hold Qwen's BPE ranks (expected ranks 0..{FIRST_ADDED_ID - 1}, each once)",
            f"reinstall the wheel: `{QWEN_RANKS_INSTALL}`",
        )

    class _Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return ranks

    vocab, merges = _Converter(str(path)).extract_vocab_merges_from_model(str(path))
    return _qwen_tokenizer(vocab, merges, thinking=thinking)


def _read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """The tiktoken BPE file format ("base64 rank" lines), read without tiktoken: it is the whole format."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as error:
            raise ModelError(
                f"{path} is not a tiktoken BPE ranks file (line {number}: {error})",
                f"reinstall the wheel: `{QWEN_RANKS_INSTALL}`",
            ) from None
    return ranks


def resolve_vocabulary(vocabulary: Vocabulary) -> Literal["qwen", "trained"]:
    """Resolve "auto": "qwen" where Qwen's ranks are installed, else "trained"."""
    if vocabulary == "auto":
        return "qwen" if qwen_ranks_file() is not None else "trained"
    return vocabulary


def _qwen_tokenizer(vocab: dict[str, int], merges: list, *, thinking: bool):
    """A ``Qwen2Tokenizer`` over ``vocab`` (ids < 151643) with Qwen's added tokens, chat template and eos/pad."""
    from transformers import AddedToken, Qwen2Tokenizer

    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_tokens([AddedToken(t, special=t not in _NON_SPECIAL, normalized=False) for t in QWEN_ADDED_TOKENS])
    tokenizer.chat_template = THINKING_CHAT_TEMPLATE if thinking else CHAT_TEMPLATE
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    ids = tokenizer.convert_tokens_to_ids(list(QWEN_ADDED_TOKENS))
    if ids != list(range(FIRST_ADDED_ID, FIRST_ADDED_ID + len(QWEN_ADDED_TOKENS))):
        raise RuntimeError(f"tokenizer put Qwen's special tokens at the wrong ids: {ids[:3]}...")
    return tokenizer

"""Qwen's real vocabulary, built from the BPE ranks the dashscope wheel ships: the ids the prompt relies on.

The reference is tiktoken itself, reading the same ranks with Qwen's own pre-tokenizer
pattern: our transformers tokenizer must split every text exactly as it does.
"""

from __future__ import annotations

import argparse
import json
import string
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.commands import model_cmd
from inspector.errors import ModelError
from inspector.models import (
    RANDOM_MARKER,
    build_qwen_tokenizer,
    load_tokenizer,
    qwen_ranks_file,
)
from inspector.models.tokenizer import FIRST_ADDED_ID, QWEN_ADDED_TOKENS, QWEN_VOCAB_SIZE
from inspector.prompting import EXPLANATION_LEAD, build_prompt

needs_ranks = pytest.mark.skipif(
    qwen_ranks_file() is None, reason="Qwen's BPE ranks are not installed: pip install --no-deps dashscope"
)
# Qwen's tokenization_qwen.py PAT_STR (single digits), the same regex as Qwen2Tokenizer's.
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Any text, and texts that weave Qwen's added tokens into words and whitespace.
TEXTS = st.text(max_size=40) | st.lists(st.sampled_from([*QWEN_ADDED_TOKENS, "x", " \n", "é"]), max_size=8).map("".join)
# DESIGN.md: the ids the prompt and the decode loop rely on.
SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
    "<think>": 151667,
    "</think>": 151668,
}


@pytest.fixture(scope="module")
def qwen():
    return build_qwen_tokenizer()


@pytest.fixture(scope="module")
def reference():
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(qwen_ranks_file()))
    specials = {token: FIRST_ADDED_ID + i for i, token in enumerate(QWEN_ADDED_TOKENS)}
    return tiktoken.Encoding("qwen", pat_str=QWEN_PATTERN, mergeable_ranks=ranks, special_tokens=specials)


@needs_ranks
def test_every_option_letter_is_one_token_32_to_57(qwen) -> None:
    for offset, letter in enumerate(string.ascii_uppercase):
        assert qwen.encode(letter, add_special_tokens=False) == [32 + offset], letter


@needs_ranks
def test_explanation_lead_and_special_tokens_get_the_real_ids(qwen) -> None:
    assert qwen.encode(EXPLANATION_LEAD, add_special_tokens=False) == [198, 69769, 25]
    for token, expected in SPECIAL_IDS.items():
        assert qwen.convert_tokens_to_ids(token) == expected, token
        assert qwen.encode(token, add_special_tokens=False) == [expected], token  # matched inside text too
    assert len(qwen) == FIRST_ADDED_ID + len(QWEN_ADDED_TOKENS) <= QWEN_VOCAB_SIZE
    assert qwen.eos_token_id == 151645 and qwen.pad_token_id == 151643


@needs_ranks
def test_prompt_carries_the_ids_a_real_checkpoint_sees(qwen, inspection) -> None:
    prompt = build_prompt(qwen, inspection, 16)
    ids = prompt.input_ids.tolist()
    assert prompt.option_ids == (32, 33, 34, 35)  # A (ok), B, C, D: the three defect classes
    assert prompt.explanation_ids == (198, 69769, 25)
    assert prompt.think_close_ids == (151668, 271)  # "</think>", "\n\n"
    assert set(prompt.stop_ids) == {151643, 151645}
    # <|im_start|> "user" "\n" <|vision_start|> 16 x <|image_pad|> <|vision_end|> ...
    assert ids[:4] == [151644, 872, 198, 151652]
    assert ids[4:20] == [151655] * 16 and ids[20] == 151653 and 151655 not in ids[21:]
    # ... <|im_end|> "\n" <|im_start|> "assistant" "\n"
    assert ids[-5:] == [151645, 198, 151644, 77091, 198]


@needs_ranks
def test_matches_tiktoken_on_qwen_texts(qwen, reference) -> None:
    texts = ["Hello world", "你好", "0.93", '{"verdict": "NG", "class": "scratch", "confidence": 0.93}']
    for text in texts:
        assert qwen.encode(text, add_special_tokens=False) == reference.encode_ordinary(text), text
    assert qwen.encode("Hello world", add_special_tokens=False) == [9707, 1879]


@needs_ranks
@settings(max_examples=60, deadline=None)
@given(TEXTS)
def test_splits_any_text_as_tiktoken_does(qwen, reference, text: str) -> None:
    text = unicodedata.normalize("NFC", text)  # the transformers tokenizer NFC-normalises first
    ids = qwen.encode(text, add_special_tokens=False)
    assert ids == reference.encode(text, allowed_special="all")  # Qwen's added tokens are matched in text
    assert qwen.decode(ids) == text


@needs_ranks
def test_inspector_model_tiny_uses_qwen_vocabulary(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    model_cmd.register(parser.add_subparsers())  # the command alone: the CLI imports every other command
    args = parser.parse_args(["model", "tiny", str(tmp_path / "tiny")])
    assert args.func(args) == 0
    marker = json.loads((tmp_path / "tiny" / RANDOM_MARKER).read_text())
    assert marker["tokenizer"] == "qwen" and "qwen.tiktoken" in marker["tokenizer_source"]
    tokenizer = load_tokenizer(str(tmp_path / "tiny"))
    assert tokenizer.encode(EXPLANATION_LEAD, add_special_tokens=False) == [198, 69769, 25]
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655


def test_inspector_model_tiny_vocabulary_can_be_pinned_to_the_offline_one(tmp_path: Path, capsys) -> None:
    """--vocabulary trained gives the fresh-clone model even where Qwen's ranks are installed."""
    parser = argparse.ArgumentParser()
    model_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["model", "tiny", str(tmp_path / "tiny"), "--vocabulary", "trained"])
    assert args.func(args) == 0
    marker = json.loads((tmp_path / "tiny" / RANDOM_MARKER).read_text())
    assert marker["tokenizer"] == "trained"
    assert "trained vocabulary" in capsys.readouterr().out
    assert load_tokenizer(str(tmp_path / "tiny")).encode(EXPLANATION_LEAD, add_special_tokens=False) != [198, 69769, 25]


def test_a_file_that_is_not_tiktoken_ranks_names_the_fix(tmp_path: Path) -> None:
    garbage = tmp_path / "qwen.tiktoken"
    garbage.write_text("not base64 at all!\n")
    with pytest.raises(ModelError, match="not a tiktoken BPE ranks file") as caught:
        build_qwen_tokenizer(garbage)
    assert "pip install --no-deps dashscope" in caught.value.hint


def test_ranks_that_are_not_qwens_are_refused(tmp_path: Path) -> None:
    short = tmp_path / "qwen.tiktoken"
    short.write_text("QQ== 0\nQg== 1\n")  # "A" and "B": well-formed, but not Qwen's 151,643 ranks
    with pytest.raises(ModelError, match="does not hold Qwen's BPE ranks"):
        build_qwen_tokenizer(short)


def test_missing_ranks_file_names_the_install(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="absent.tiktoken does not exist") as caught:
        build_qwen_tokenizer(tmp_path / "absent.tiktoken")
    assert "pip install --no-deps dashscope" in caught.value.hint

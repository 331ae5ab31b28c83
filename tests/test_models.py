"""Tiny random Qwen3-VL: written offline, loaded through the same path as a real checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from inspector.errors import ModelError
from inspector.models import (
    RANDOM_MARKER,
    TinySpec,
    check_checkpoint,
    load_model,
    tiny_config,
    write_tiny_model,
)
from inspector.models.tokenizer import FIRST_ADDED_ID, QWEN_ADDED_TOKENS


def test_round_trip_same_weights_and_real_ids(tiny_model_dir: Path, tiny_loaded) -> None:
    again = load_model(str(tiny_model_dir))
    for (name, a), (_, b) in zip(tiny_loaded.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert again.random_weights is True
    tokenizer = again.tokenizer
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    ids = tokenizer.convert_tokens_to_ids(list(QWEN_ADDED_TOKENS))
    assert ids[0] == FIRST_ADDED_ID == 151643
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == again.config.image_token_id == 151655
    assert tokenizer.convert_tokens_to_ids("</think>") == 151668


def test_real_architecture_features(tiny_loaded) -> None:
    config = tiny_loaded.config
    assert config.model_type == "qwen3_vl"
    assert len(config.vision_config.deepstack_visual_indexes) == 3
    text = config.text_config
    assert text.num_attention_heads // text.num_key_value_heads == 32 // 8  # the 4B model's GQA ratio
    assert sum(text.rope_parameters["mrope_section"]) == text.head_dim // 2
    assert text.vocab_size == 151936


def test_seed_determines_weights(tmp_path: Path) -> None:
    small = TinySpec(text_layers=3, vision_depth=3, deepstack_indexes=(0, 1, 2))
    a = load_model(str(write_tiny_model(tmp_path / "a", seed=1, spec=small, vocabulary="trained"))).model.state_dict()
    b = load_model(str(write_tiny_model(tmp_path / "b", seed=1, spec=small, vocabulary="trained"))).model.state_dict()
    c = load_model(str(write_tiny_model(tmp_path / "c", seed=2, spec=small, vocabulary="trained"))).model.state_dict()
    key = "model.visual.patch_embed.proj.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


def test_invalid_spec_rejected() -> None:
    with pytest.raises(ValueError, match="perfect square"):
        tiny_config(TinySpec(num_position_embeddings=60))
    with pytest.raises(ValueError, match="DeepStack"):
        tiny_config(TinySpec(vision_depth=2))


def test_missing_directory_names_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist") as caught:
        load_model(str(tmp_path / "nowhere"))
    assert "inspector model tiny" in caught.value.hint


def test_other_architecture_rejected(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ModelError, match="llava model, not Qwen3-VL"):
        check_checkpoint(tmp_path)


def test_refuses_to_overwrite_real_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="refusing|not a line-inspector"):
        write_tiny_model(tmp_path)
    assert not (tmp_path / RANDOM_MARKER).exists()


def test_cuda_requested_without_gpu(tiny_model_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ModelError, match="no CUDA GPU"):
        load_model(str(tiny_model_dir), device="cuda")


def test_missing_relative_directory_reads_as_hub_id_yet_names_the_offline_fix(tmp_path: Path, monkeypatch) -> None:
    """`models/tiny` not written yet looks like a hub id; offline, the message must still say what to run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not a local directory") as caught:
        load_model("models/tiny")
    assert "inspector model tiny models/tiny" in caught.value.hint


def test_without_qwen_ranks_auto_falls_back_to_the_trained_vocabulary(tmp_path: Path, monkeypatch) -> None:
    """Where dashscope is absent, `inspector model tiny` still works offline, and the marker says which tokenizer."""
    monkeypatch.setattr("inspector.models.tokenizer.qwen_ranks_file", lambda: None)
    small = TinySpec(text_layers=3, vision_depth=3, deepstack_indexes=(0, 1, 2))
    out = write_tiny_model(tmp_path / "m", spec=small)  # vocabulary="auto"
    marker = json.loads((out / RANDOM_MARKER).read_text())
    assert marker["tokenizer"] == "trained" and "trained offline" in marker["tokenizer_source"]
    tokenizer = load_model(str(out)).tokenizer
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655
    assert len(tokenizer) == FIRST_ADDED_ID + len(QWEN_ADDED_TOKENS)

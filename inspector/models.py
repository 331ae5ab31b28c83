"""Qwen3-VL checkpoints: load one (a directory or a hub id), or write a tiny random one.

The tiny model is the *real* ``Qwen3VLForConditionalGeneration`` architecture (DeepStack,
grouped KV heads, interleaved M-RoPE) at toy widths, with a real byte-level BPE
``Qwen2Tokenizer`` carrying Qwen's special tokens at their real ids, saved with
``save_pretrained``. It loads through exactly the path a real checkpoint does. Its
weights are random: a marker file says so, and every verdict it produces is labelled.

The tokenizer is Qwen's own vocabulary where its BPE ranks are installed (they ship as
``dashscope/resources/qwen.tiktoken`` in the ``dashscope`` wheel: ``pip install --no-deps
dashscope``), so prompts get the very token ids a real checkpoint sees; without them, a
small byte-level BPE trained offline in well under a second stands in. The marker file
says which one a model got.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from inspector.errors import ModelError

log = logging.getLogger(__name__)

# Written next to config.json by `inspector model tiny`; its presence labels verdicts as random.
RANDOM_MARKER = "line_inspector_random_model.json"
# Written by `inspector train` when the base was a tiny random model: trained, but a DEMO model
# (toy widths, synthetic data); its presence labels verdicts demo_model: true.
DEMO_MARKER = "line_inspector_demo_model.json"

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
# What the marker file says about the tokenizer a tiny model got.
_TOKENIZER_SOURCES = {
    "qwen": f"Qwen's BPE ranks ({QWEN_RANKS_RESOURCE}): the real ids",
    "trained": "a small byte-level BPE trained offline: Qwen's special-token ids, other ids are not Qwen's",
}

# Qwen3-VL's image processor settings (preprocessor_config.json of the real checkpoints).
PREPROCESSOR_CONFIG: dict[str, Any] = {
    "image_processor_type": "Qwen2VLImageProcessor",
    "do_resize": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_convert_rgb": True,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "size": {"shortest_edge": 65536, "longest_edge": 16777216},
}

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


@dataclass(frozen=True, slots=True)
class TinySpec:
    """Widths of the tiny model; defaults keep the 4B model's 4:1 query:KV head ratio."""

    text_hidden: int = 64
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 1
    text_head_dim: int = 16
    text_mlp: int = 128
    vision_depth: int = 4
    vision_hidden: int = 32
    vision_heads: int = 2
    vision_mlp: int = 64
    deepstack_indexes: tuple[int, ...] = (1, 2, 3)
    num_position_embeddings: int = 64  # must be a perfect square
    tie_word_embeddings: bool = True
    tokenizer_merges: int = 600


def tiny_config(spec: TinySpec = TinySpec()):  # -> Qwen3VLConfig
    from transformers import Qwen3VLConfig

    half = spec.text_head_dim // 2
    # Qwen's ratio [24, 20, 20] of 64 (t, h, w), rounded, summing to head_dim / 2.
    mrope = [half - 2 * round(half * 20 / 64), round(half * 20 / 64), round(half * 20 / 64)]
    side = int(spec.num_position_embeddings**0.5)
    if side * side != spec.num_position_embeddings:
        raise ValueError("num_position_embeddings must be a perfect square")
    if max(spec.deepstack_indexes) >= spec.vision_depth or len(spec.deepstack_indexes) > spec.text_layers:
        raise ValueError("each DeepStack index must be < vision depth, and their count <= text layers")
    return Qwen3VLConfig(
        text_config={
            "vocab_size": QWEN_VOCAB_SIZE,
            "hidden_size": spec.text_hidden,
            "intermediate_size": spec.text_mlp,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "num_key_value_heads": spec.text_kv_heads,
            "head_dim": spec.text_head_dim,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": mrope,
                "mrope_interleaved": True,
            },
            "tie_word_embeddings": spec.tie_word_embeddings,
        },
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_mlp,
            "num_heads": spec.vision_heads,
            "out_hidden_size": spec.text_hidden,
            "num_position_embeddings": spec.num_position_embeddings,
            "deepstack_visual_indexes": list(spec.deepstack_indexes),
            "patch_size": 16,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
        },
        tie_word_embeddings=spec.tie_word_embeddings,
    )


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


def write_tiny_model(
    out_dir: Path,
    *,
    seed: int = 0,
    spec: TinySpec = TinySpec(),
    thinking: bool = False,
    vocabulary: Vocabulary = "auto",
) -> Path:
    """Write a seeded, randomly initialised Qwen3-VL checkpoint directory (config, safetensors, tokenizer).

    ``thinking`` gives it the Thinking variant's chat template (the assistant turn opens ``<think>``).
    ``vocabulary``: "qwen" (Qwen's real BPE, needs the dashscope wheel), "trained" (a small BPE
    trained offline; fast to build and load, for tests), or "auto" (Qwen's where installed).
    """
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    _quiet_transformers()
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists() and not (out_dir / RANDOM_MARKER).exists():
        raise ModelError(
            f"{out_dir} already holds a model that is not a line-inspector tiny model",
            "choose an empty directory; refusing to overwrite a real checkpoint",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(tiny_config(spec)).eval()
    model.save_pretrained(out_dir)
    chosen = resolve_vocabulary(vocabulary)
    if chosen == "qwen":
        tokenizer = build_qwen_tokenizer(thinking=thinking)
    else:
        tokenizer = build_tiny_tokenizer(spec.tokenizer_merges, thinking=thinking)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2) + "\n")
    marker = {
        "random_weights": True,
        "seed": seed,
        "variant": "thinking" if thinking else "instruct",
        "tokenizer": chosen,
        "tokenizer_source": _TOKENIZER_SOURCES[chosen],
        "warning": "randomly initialised test model: its verdicts mean nothing about any part",
    }
    (out_dir / RANDOM_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    log.info("wrote tiny random Qwen3-VL to %s", out_dir)
    return out_dir


@dataclass
class LoadedModel:
    """A Qwen3-VL model with its tokenizer, and what verdicts need to say about it."""

    model: Any  # Qwen3VLForConditionalGeneration
    tokenizer: Any
    model_id: str
    random_weights: bool
    dtype: str
    device: str
    demo_model: bool = False

    @property
    def config(self):
        return self.model.config


_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def is_random_model(path: str | Path) -> bool:
    return (Path(path) / RANDOM_MARKER).is_file()


def is_demo_model(path: str | Path) -> bool:
    return (Path(path) / DEMO_MARKER).is_file()


def check_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read config.json of a local directory and insist it is Qwen3-VL; returns the config dict."""
    directory = Path(path)
    if not directory.is_dir():
        raise ModelError(
            f"model directory {directory} does not exist",
            "run `inspector model tiny models/tiny` for an offline test model, or pass a Qwen3-VL checkpoint "
            "directory / hub id (e.g. Qwen/Qwen3-VL-4B-Instruct)",
        )
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{directory} has no config.json", "point at the directory that holds config.json")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as error:
        raise ModelError(f"{config_file} is not valid JSON: {error}") from None
    model_type = config.get("model_type")
    if model_type != "qwen3_vl":
        raise ModelError(
            f"{directory} holds a {model_type or 'unknown'!s} model, not Qwen3-VL (model_type 'qwen3_vl')",
            "use a Qwen3-VL checkpoint: Qwen/Qwen3-VL-{4B,8B}-{Instruct,Thinking}",
        )
    if not any(directory.glob("*.safetensors")):
        raise ModelError(f"{directory} has no *.safetensors weights", "download the full checkpoint")
    return config


def load_model(path: str, *, dtype: str = "float32", device: str = "cpu") -> LoadedModel:
    """Load a checkpoint directory, or a hub id when the user has network access."""
    import torch
    from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

    _quiet_transformers()
    local = Path(path).expanduser()
    looks_like_hub_id = not local.exists() and path.count("/") == 1 and not path.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        check_checkpoint(local)
        source = str(local)
    else:
        source = path
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device} requested but no CUDA GPU is visible", "set model.device: cpu")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = Qwen3VLForConditionalGeneration.from_pretrained(source, dtype=getattr(torch, _DTYPES[dtype]))
    except OSError as error:
        raise _load_error(path, error, looks_like_hub_id) from None
    model = model.to(device).eval()
    random_weights = is_random_model(local) if not looks_like_hub_id else False
    if random_weights:
        log.info("%s is a RANDOM test model: its verdicts mean nothing", path)
    demo_model = is_demo_model(local) if not looks_like_hub_id else False
    return LoadedModel(model, tokenizer, _model_id(path), random_weights, dtype, device, demo_model)


def load_tokenizer(path: str):
    """The checkpoint's tokenizer alone (backends that do not need the torch weights)."""
    from transformers import AutoTokenizer

    local = Path(path).expanduser()
    if local.exists():
        check_checkpoint(local)
    try:
        return AutoTokenizer.from_pretrained(str(local) if local.exists() else path)
    except OSError as error:
        raise _load_error(path, error, not local.exists()) from None


def _load_error(path: str, error: OSError, as_hub_id: bool) -> ModelError:
    reason = str(error).splitlines()[0]
    if as_hub_id:
        return ModelError(
            f"{path} is not a local directory, and loading it as a hub id failed: {reason}",
            f"for the offline demo run `inspector model tiny {path}` first; for a real model pass a checkpoint "
            "directory, or a hub id such as Qwen/Qwen3-VL-4B-Instruct on a machine that reaches the hub",
        )
    return ModelError(f"cannot load {path}: {reason}", "the checkpoint directory looks incomplete")


def _quiet_transformers() -> None:
    """No per-shard progress bars: our own progress and logs say what is happening."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _model_id(path: str) -> str:
    local = Path(path)
    return local.resolve().name if local.exists() else path

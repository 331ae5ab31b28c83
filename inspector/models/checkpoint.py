"""Loading a Qwen3-VL checkpoint (a directory or a hub id) and what verdicts must say about it.

A checkpoint directory is checked (config.json says ``qwen3_vl``, safetensors present) before
transformers sees it, so a wrong path gets an error naming the fix. Marker files written next
to config.json label random-weight test models and demo-trained models.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.errors import ModelError

log = logging.getLogger(__name__)

# Written next to config.json by `inspector model tiny`; its presence labels verdicts as random.
RANDOM_MARKER = "line_inspector_random_model.json"
# Written by `inspector train` when the base was a tiny random model: trained, but a DEMO model
# (toy widths, synthetic data); its presence labels verdicts demo_model: true.
DEMO_MARKER = "line_inspector_demo_model.json"


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

    quiet_transformers()
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


def quiet_transformers() -> None:
    """No per-shard progress bars: our own progress and logs say what is happening."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _model_id(path: str) -> str:
    local = Path(path)
    return local.resolve().name if local.exists() else path

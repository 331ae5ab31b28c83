"""LoRA (peft) on Qwen3-VL's language model; merged back into an ordinary checkpoint for every other command."""

from __future__ import annotations

from typing import Any

# The language model's projections. The vision tower names its own differently (qkv, proj,
# linear_fc1/2), and the regex anchors on language_model so none of them is adapted.
LANGUAGE_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TARGET_MODULES = r".*language_model.*\.(" + "|".join(LANGUAGE_PROJECTIONS) + r")"


def add_lora(model: Any, *, rank: int = 16, alpha: int = 32, train_vision: bool = False) -> Any:
    """Wrap ``model`` with LoRA adapters (dropout 0: deterministic, resumable); everything else frozen,
    except the vision tower when ``train_vision``."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=TARGET_MODULES,
        bias="none",
        # A trained vision tower travels with the adapter (a full copy: it is small beside the LLM).
        modules_to_save=["visual"] if train_vision else None,
    )
    return get_peft_model(model, config)


def merge(peft_model: Any) -> Any:
    """The ordinary model with the adapters folded into its weights."""
    return peft_model.merge_and_unload()

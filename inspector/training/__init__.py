"""Adapting a Qwen3-VL checkpoint to a station's labelled data (``inspector train``).

``objective``: the loss over the very option logits inference softmaxes (+ explanation words);
``data``: labelled tiles in memory, class balance, augmentation; ``lora``: peft adapters and
merging; ``trainer``: the epoch loop with validation, best-epoch selection and resumable state;
``run``: a whole run, from data paths to an ordinary checkpoint with ``training.json``.
"""

from inspector.training.trainer import TrainingError, TrainOptions

__all__ = ["TrainOptions", "TrainingError"]

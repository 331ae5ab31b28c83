"""Which model a set of graphs came from: architecture hash, weights hash, name.

Two exports are "the same model" when their config hashes and weight hashes agree. The
config hash ignores keys that do not change the network (transformers version, dtype,
``_name_or_path``), so re-saving a checkpoint under another transformers release does
not orphan its graphs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inspector.models import check_checkpoint, is_demo_model, is_random_model

log = logging.getLogger(__name__)

_VOLATILE_KEYS = {"transformers_version", "_name_or_path", "dtype", "torch_dtype", "architectures"}
_CHUNK = 16 * 1024 * 1024
_SAMPLES, _SAMPLE_BYTES = 16, 64 * 1024


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    model_type: str
    name: str
    config_sha256: str
    weights_sha256: str
    weights_fingerprint: str  # cheap: sizes + sampled bytes, for checks at every start
    weight_files: tuple[tuple[str, int], ...]  # (file name, size in bytes), sorted by name
    random_weights: bool
    demo_model: bool = False  # trained by `inspector train` from a tiny random model

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["weight_files"] = [{"name": n, "bytes": s} for n, s in self.weight_files]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelIdentity:
        files = tuple((str(f["name"]), int(f["bytes"])) for f in data.get("weight_files", []))
        return cls(
            str(data["model_type"]), str(data["name"]), str(data["config_sha256"]),
            str(data["weights_sha256"]), str(data.get("weights_fingerprint", "")), files,
            bool(data.get("random_weights", False)), bool(data.get("demo_model", False)),
        )  # fmt: skip

    def same_model(self, other: ModelIdentity) -> bool:
        return self.config_sha256 == other.config_sha256 and self.weights_sha256 == other.weights_sha256


def _strip(config: Any) -> Any:
    if isinstance(config, dict):
        return {k: _strip(v) for k, v in sorted(config.items()) if k not in _VOLATILE_KEYS}
    if isinstance(config, list):
        return [_strip(v) for v in config]
    return config


def config_sha256(config: dict[str, Any]) -> str:
    """Hash of the architecture-relevant part of a config.json mapping."""
    canonical = json.dumps(_strip(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def weight_files(model_dir: Path) -> list[Path]:
    return sorted(Path(model_dir).glob("*.safetensors"))


def weights_sha256(files: list[Path]) -> str:
    """One sha256 over the safetensors files in name order, streamed (checkpoints are many GB)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def weights_fingerprint(files: list[Path]) -> str:
    """Hash of each file's name, size and 16 evenly spaced 64 KiB samples: reads ~1 MiB a file,
    so a backend can check it runs the graphs of *these* weights at every start."""
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as handle:
            for index in range(_SAMPLES):
                handle.seek(max(size - _SAMPLE_BYTES, 0) * index // (_SAMPLES - 1))
                digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def identify_checkpoint(model_dir: str | Path, *, hash_weights: bool = True) -> ModelIdentity:
    """Identity of a local Qwen3-VL checkpoint directory; raises ModelError for anything else.

    ``hash_weights=False`` skips the (slow, full) weight hash and leaves it empty; the
    fingerprint is always computed.
    """
    directory = Path(model_dir)
    config = check_checkpoint(directory)
    files = weight_files(directory)
    if hash_weights:
        log.info("hashing %d weight file(s) of %s", len(files), directory)
    return ModelIdentity(
        model_type=str(config.get("model_type")),
        name=directory.resolve().name,
        config_sha256=config_sha256(config),
        weights_sha256=weights_sha256(files) if hash_weights else "",
        weights_fingerprint=weights_fingerprint(files),
        weight_files=tuple((f.name, f.stat().st_size) for f in files),
        random_weights=is_random_model(directory),
        demo_model=is_demo_model(directory),
    )


def identify_state(model: Any, name: str, *, random_weights: bool) -> ModelIdentity:
    """Identity of an in-memory model that was never saved (benchmarks): hashes its tensors."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode() + b"\0")
        digest.update(tensor.detach().contiguous().view(-1).view(torch.uint8).numpy())
    return ModelIdentity(
        model_type=str(model.config.model_type),
        name=name,
        config_sha256=config_sha256(model.config.to_dict()),
        weights_sha256=digest.hexdigest(),
        weights_fingerprint=digest.hexdigest(),
        weight_files=(),
        random_weights=random_weights,
    )

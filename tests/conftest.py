"""Shared test setup: no hub downloads, ever; one tiny random Qwen3-VL per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from inspector.config import InspectionConfig  # noqa: E402

from mosquitto import Mosquitto  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inspector.models import write_tiny_model

    # The offline-trained vocabulary: Qwen's real one (tests/test_qwen_vocab.py) costs ~1.5 s per load.
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0, vocabulary="trained")


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir: Path):
    from inspector.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def varied_loaded(tmp_path_factory: pytest.TempPathFactory):
    """A tiny model whose greedy decode is not one repeated token (tests/varied_models.py), for decode parity."""
    from inspector.models import load_model

    from varied_models import write_varied_tiny_model

    return load_model(str(write_varied_tiny_model(tmp_path_factory.mktemp("models") / "varied", seed=0)))


@pytest.fixture(scope="session")
def inspection() -> InspectionConfig:
    return InspectionConfig(
        product="a brick wall panel",
        defects={
            "scratch": {"description": "a thin line", "threshold": 0.5},
            "spot": {"description": "a dark blob", "threshold": 0.4},
            "crack": {"description": "a jagged fracture", "threshold": 0.6},
        },
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto of this test's own (tests/mosquitto.py), stopped at the end."""
    with Mosquitto(tmp_path / "broker") as running:
        yield running

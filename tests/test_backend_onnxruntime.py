"""The onnxruntime backend: the Backend protocol on exported graphs, checked against the torch backend.

One export of a tiny random Qwen3-VL (text weights drawn at std 0.08 so greedy decodes
vary) at 64 px tiles. Tolerance 1e-4 on probabilities (fp32 on both sides; observed ~1e-7).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from export.onnx_export import export_checkpoint
from export.parity import random_tiles, softmax
from inspector.backends.base import Backend
from inspector.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig, create_onnxruntime_backend
from inspector.backends.torch import TorchBackend
from inspector.config import parse_config
from inspector.errors import ConfigError, ModelError
from inspector.models import TinySpec, load_model, write_tiny_model
from inspector.prompting import build_prompt

from varied_models import write_varied_tiny_model

TILE = 64
TOL = 1e-4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_varied_tiny_model(tmp_path_factory.mktemp("ort-model") / "tiny-varied", seed=3)


@pytest.fixture(scope="module")
def onnx_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ort-export") / "graphs"
    export_checkpoint(model_dir, TILE, out)
    return out


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> TorchBackend:
    return TorchBackend(load_model(str(model_dir)))


@pytest.fixture(scope="module")
def backend(onnx_dir: Path, model_dir: Path) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(onnx_dir, providers=["CPUExecutionProvider"], model_dir=model_dir)


@pytest.fixture(scope="module")
def prefilled(reference, backend, inspection):
    grid = backend.manifest.grid_thw
    visual = reference.encode(random_tiles(3, grid, seed=7), grid)
    prompt = build_prompt(reference.loaded.tokenizer, inspection, visual.tokens_per_image)
    ids = np.tile(prompt.input_ids, (3, 1))
    return prompt, reference.prefill(ids, visual, prompt.option_ids), backend.prefill(ids, visual, prompt.option_ids)


def test_implements_the_backend_protocol_and_labels_itself(backend: OnnxRuntimeBackend, model_dir: Path) -> None:
    assert isinstance(backend, Backend)
    assert backend.info.name == "onnxruntime"
    assert backend.info.precision == "float32"
    assert backend.info.model_id == model_dir.name
    assert backend.info.random_weights is True
    assert backend.info.device == "cpu"


def test_option_probabilities_match(prefilled) -> None:
    _, (ref_logits, _), (onnx_logits, state) = prefilled
    assert state.batch == 3
    assert np.abs(softmax(onnx_logits) - softmax(ref_logits)).max() <= TOL


@pytest.mark.parametrize(
    ("rows", "forced", "use_stops", "max_new"),
    [
        ([2, 0], "explanation", True, 16),  # the classifier's call: a subset of rows, forced lead, real stops
        ([1], "none", False, 32),  # no forced ids: the first token comes from the prefill's last position
        ([0, 1, 2], "explanation", False, 0),  # nothing to generate
    ],
)
def test_generate_matches_the_torch_backend(reference, backend, prefilled, rows, forced, use_stops, max_new) -> None:
    prompt, (_, ref_state), (_, onnx_state) = prefilled
    forced_ids = prompt.explanation_ids if forced == "explanation" else ()
    stops = prompt.stop_ids if use_stops else ()
    expected = reference.generate(ref_state, rows, forced_ids, max_new, stops)
    assert backend.generate(onnx_state, rows, forced_ids, max_new, stops) == expected
    assert [len(tokens) <= max_new for tokens in expected] == [True] * len(rows)


def test_state_is_reusable_and_empty_rows_generate_nothing(backend, prefilled) -> None:
    prompt, _, (_, state) = prefilled
    first = backend.generate(state, [0], prompt.explanation_ids, 8, ())
    assert backend.generate(state, [0], prompt.explanation_ids, 8, ()) == first
    assert backend.generate(state, [], prompt.explanation_ids, 8, ()) == []


def test_encode_refuses_tiles_of_another_size(backend) -> None:
    with pytest.raises(ModelError, match="baked for 64 px tiles") as error:
        backend.encode(np.zeros((1, 64, 1536), np.float32), (1, 8, 8))
    assert "tiling.tile" in (error.value.hint or "")


# -- the factory checks the export against the config -------------------------------------


def config_for(model_dir: Path, onnx_dir: Path | None, **extra) -> OnnxRuntimeConfig:
    return OnnxRuntimeConfig(path=str(model_dir), onnx_dir=onnx_dir, **extra)


def test_factory_builds_the_backend_for_a_matching_config(model_dir, onnx_dir) -> None:
    backend = create_onnxruntime_backend(config_for(model_dir, onnx_dir), tile=TILE)
    assert backend.info.name == "onnxruntime" and backend.manifest.tile == TILE


def test_factory_needs_onnx_dir(model_dir) -> None:
    with pytest.raises(ConfigError, match="onnx_dir is not set") as error:
        create_onnxruntime_backend(config_for(model_dir, None))
    assert "inspector export onnx" in (error.value.hint or "")


def test_factory_refuses_another_tile_size(model_dir, onnx_dir) -> None:
    with pytest.raises(ModelError, match="built for 64 px tiles, but tiling.tile is 512") as error:
        create_onnxruntime_backend(config_for(model_dir, onnx_dir), tile=512)
    assert "--tile 512" in (error.value.hint or "")


def test_factory_refuses_graphs_of_other_weights(onnx_dir, tiny_model_dir) -> None:
    # Same architecture, other random weights: caught by the weights fingerprint.
    with pytest.raises(ModelError, match="other weights"):
        create_onnxruntime_backend(config_for(tiny_model_dir, onnx_dir))


def test_factory_refuses_graphs_of_another_architecture(onnx_dir, tmp_path) -> None:
    other = write_tiny_model(tmp_path / "other", spec=TinySpec(text_layers=3, deepstack_indexes=(0, 1, 2)))
    with pytest.raises(ModelError, match="exported from tiny-varied") as error:
        create_onnxruntime_backend(config_for(other, onnx_dir))
    assert "re-export" in (error.value.hint or "")


def test_factory_refuses_a_directory_without_manifest(model_dir, tmp_path) -> None:
    with pytest.raises(ModelError, match="no manifest.json"):
        create_onnxruntime_backend(config_for(model_dir, tmp_path))


def test_factory_refuses_a_hub_id_of_another_model(onnx_dir) -> None:
    with pytest.raises(ModelError, match="exported from tiny-varied"):
        create_onnxruntime_backend(config_for(Path("Qwen/Qwen3-VL-4B-Instruct"), onnx_dir))


def test_factory_explains_a_missing_cuda_provider(model_dir, onnx_dir) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ModelError, match="no CUDA execution provider") as error:
        create_onnxruntime_backend(config_for(model_dir, onnx_dir, device="cuda"))
    assert "onnxruntime-gpu" in (error.value.hint or "")


def test_a_moved_export_still_loads(onnx_dir, tmp_path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(onnx_dir, moved)
    assert OnnxRuntimeBackend(moved).manifest.tile == TILE


# -- the whole pipeline on both backends --------------------------------------------------


def test_replay_of_the_demo_clip_gives_the_same_verdicts(model_dir, onnx_dir, tmp_path) -> None:
    from inspector.demo_data import write_demo_clip
    from inspector.pipeline import build_inspector
    from inspector.replay import replay_frames
    from inspector.sources import open_source

    clip = write_demo_clip(tmp_path / "demo", frames=3, size=(160, 96), seed=1)
    station = {
        "source": {"uri": str(clip.video)},
        "tiling": {"tile": TILE, "overlap": 0.2, "global_view": True},
        "inspection": {
            "product": "a textured product surface",
            "defects": {
                "scratch": {"description": "a thin line"},
                "spot": {"description": "a dark blob"},
                "crack": {"description": "a jagged fracture"},
            },  # fmt: skip
            "explanation": "always",
            "max_explanation_tokens": 12,
        },
    }
    verdicts = {}
    for name in ("torch", "onnxruntime"):
        model = {"path": str(model_dir), "backend": name, "batch_size": 4}
        if name == "onnxruntime":
            model["onnx_dir"] = str(onnx_dir)
        inspector = build_inspector(parse_config({**station, "model": model}))
        collected = []
        with open_source(str(clip.video)) as source:
            replay_frames(source, inspector, [], on_frame=lambda frame, verdict: collected.append(verdict))
        verdicts[name] = collected
    assert len(verdicts["torch"]) == len(verdicts["onnxruntime"]) == 3
    for ref, ours in zip(verdicts["torch"], verdicts["onnxruntime"]):
        assert ours.model.backend == "onnxruntime" and ours.model.random_weights
        assert ours.verdict == ref.verdict
        # Confidences are tile probabilities rounded to 6 places: a 1e-7 difference may flip the last digit.
        assert [d.model_dump(exclude={"confidence"}) for d in ours.defects] == [
            d.model_dump(exclude={"confidence"}) for d in ref.defects
        ]
        assert all(abs(d.confidence - r.confidence) <= TOL for d, r in zip(ours.defects, ref.defects))
        assert len(ours.tiles) == len(ref.tiles) > 1
        for ref_tile, tile in zip(ref.tiles, ours.tiles):
            assert max(abs(tile.probabilities[c] - ref_tile.probabilities[c]) for c in ref_tile.probabilities) <= TOL
            assert tile.explanation == ref_tile.explanation

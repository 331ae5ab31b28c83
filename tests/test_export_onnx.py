"""ONNX export: graphs of standard ops that reproduce the transformers reference.

Tiny random models of the real Qwen3-VL architecture, two shapes: the project default (the
4B model's 4:1 query:KV head ratio, 3 DeepStack layers, tied head) and an untied 3:1 one
with DeepStack taken from the first vision block. Text weights are drawn wider than the
default init (std 0.08), otherwise the tiny model's greedy decode repeats one token and
"32 identical tokens" would prove little.

Tolerances (fp32): 1e-4 on vision outputs and option probabilities. Both sides compute the
same float32 expressions; only summation order and fused kernels differ (observed ~1e-7).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.onnx_export import ExportError, export_checkpoint
from export.parity import random_tiles, softmax
from inspector.artifacts.identity import identify_checkpoint
from inspector.artifacts.manifest import MANIFEST, read_manifest
from inspector.backends.onnxruntime import OnnxRuntimeBackend
from inspector.backends.torch import TorchBackend
from inspector.errors import InspectorError, ModelError
from inspector.models import TinySpec, load_model
from inspector.prompting import build_prompt

from varied_models import write_varied_tiny_model

TOL = 1e-4
TOKENS = 32
SHAPES = {
    "ratio4_tied": TinySpec(),
    "ratio3_untied": TinySpec(
        text_hidden=96, text_layers=3, text_heads=6, text_kv_heads=2, text_head_dim=16, text_mlp=160,
        vision_depth=5, vision_hidden=48, vision_heads=3, vision_mlp=96, deepstack_indexes=(0, 2, 4),
        num_position_embeddings=36, tie_word_embeddings=False,
    ),
}  # fmt: skip
EXPORTS = [("ratio4_tied", 32), ("ratio4_tied", 64), ("ratio3_untied", 64), ("ratio3_untied", 96)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-models")
    return {name: write_varied_tiny_model(root / name, spec) for name, spec in SHAPES.items()}


@pytest.fixture(scope="module")
def exports(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Path]:
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for name, tile in EXPORTS:
        out[(name, tile)] = root / f"{name}-{tile}"
        export_checkpoint(models[name], tile, out[(name, tile)])
    return out


@pytest.fixture(scope="module")
def torch_backends(models: dict[str, Path]) -> dict[str, TorchBackend]:
    return {name: TorchBackend(load_model(str(path))) for name, path in models.items()}


# -- the graphs ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", EXPORTS, ids=[f"{n}-{t}px" for n, t in EXPORTS])
def test_graphs_are_valid_standard_onnx_with_a_complete_manifest(exports, models, key) -> None:
    name, tile = key
    directory = exports[key]
    manifest = read_manifest(directory)
    spec = SHAPES[name]
    assert manifest.tile == tile and manifest.grid_thw == (1, tile // 16, tile // 16)
    assert manifest.tokens_per_tile == (tile // 32) ** 2
    assert manifest.opset >= 19 and manifest.dtype == "float32"
    assert manifest.text["deepstack_layers"] == 3 and manifest.text["kv_heads"] == spec.text_kv_heads
    assert manifest.token_ids["image"] == 151655
    identity = identify_checkpoint(models[name])
    assert manifest.model.weights_sha256 == identity.weights_sha256
    assert manifest.model.config_sha256 == identity.config_sha256
    assert manifest.model.model_type == "qwen3_vl" and manifest.model.random_weights
    assert set(manifest.graphs) == {"vision", "vision_bytes", "decoder", "verdict"}
    for graph in manifest.graphs.values():
        path = directory / graph.file
        onnx.checker.check_model(str(path))  # with its external data
        model = onnx.load(str(path), load_external_data=False)
        assert {op.domain for op in model.opset_import} <= {"", "ai.onnx"}, "custom op domains"
        assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
        assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 19
        # Weights live in the shared external data file, so no graph nears protobuf's 2 GB.
        assert path.stat().st_size < 2_000_000
        external = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
        assert external == {manifest.external_data}
    vision = manifest.graphs["vision"]
    assert [(t.name, t.shape) for t in vision.inputs] == [("pixel_values", ("batch", (tile // 16) ** 2, 1536))]
    assert [t.name for t in vision.outputs] == ["embeds", "deepstack"]
    patch_bytes = manifest.graphs["vision_bytes"].inputs
    assert [(t.name, t.shape, t.dtype) for t in patch_bytes] == [
        ("patch_bytes", ("batch", (tile // 16) ** 2, 768), "uint8")
    ]
    verdict = {t.name: t for t in manifest.graphs["verdict"].inputs}
    assert verdict["option_ids"].dtype == "int64" and verdict["position_ids"].shape[0] == 3
    assert manifest.graphs["verdict"].outputs[0].name == "option_logits"
    assert manifest.graphs["decoder"].outputs[0].shape == ("batch", 151936)
    assert len(manifest.graphs["decoder"].outputs) == 1 + 2 * spec.text_layers


def test_decoder_and_verdict_graphs_share_their_weights_on_disk(exports) -> None:
    directory = exports[("ratio4_tied", 64)]
    data = (directory / read_manifest(directory).external_data).stat().st_size
    graph_bytes = 0
    for name in ("decoder", "verdict"):
        model = onnx.load(str(directory / f"{name}.onnx"), load_external_data=False)
        graph_bytes += sum(int(e.value) for t in model.graph.initializer for e in t.external_data if e.key == "length")
    assert data < 0.7 * graph_bytes  # each tensor (lm_head above all) is stored once


# -- parity with the transformers reference ----------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("key", EXPORTS, ids=[f"{n}-{t}px" for n, t in EXPORTS])
def test_encode_prefill_and_greedy_decode_match_transformers(exports, torch_backends, inspection, key, batch) -> None:
    name, tile = key
    reference = torch_backends[name]
    exported = OnnxRuntimeBackend(exports[key])
    grid = exported.manifest.grid_thw
    pixels = random_tiles(batch, grid, seed=batch)
    ref_visual = reference.encode(pixels, grid)
    onnx_visual = exported.encode(pixels, grid)
    assert onnx_visual.embeds.shape == ref_visual.embeds.shape
    tokens, hidden = (tile // 32) ** 2, SHAPES[name].text_hidden
    assert onnx_visual.deepstack.shape == ref_visual.deepstack.shape == (3, batch, tokens, hidden)
    assert np.abs(onnx_visual.embeds - ref_visual.embeds).max() <= TOL
    assert np.abs(onnx_visual.deepstack - ref_visual.deepstack).max() <= TOL
    # The pipeline's hot-path form: uint8 patch bytes, normalised and repeated inside the graph.
    patch_bytes = np.random.default_rng(batch).integers(0, 256, (batch, pixels.shape[1], 768), dtype=np.uint8)
    ref_bytes, onnx_bytes = reference.encode(patch_bytes, grid), exported.encode(patch_bytes, grid)
    assert np.abs(onnx_bytes.embeds - ref_bytes.embeds).max() <= TOL
    assert np.abs(onnx_bytes.deepstack - ref_bytes.deepstack).max() <= TOL

    prompt = build_prompt(reference.loaded.tokenizer, inspection, ref_visual.tokens_per_image)
    ids = np.tile(prompt.input_ids, (batch, 1))
    ref_logits, ref_state = reference.prefill(ids, ref_visual, prompt.option_ids)
    onnx_logits, onnx_state = exported.prefill(ids, onnx_visual, prompt.option_ids)
    assert onnx_logits.shape == (batch, len(inspection.classes)) and onnx_logits.dtype == np.float32
    assert np.abs(softmax(onnx_logits) - softmax(ref_logits)).max() <= TOL

    rows = list(range(batch))
    ref_tokens = reference.generate(ref_state, rows, prompt.explanation_ids, TOKENS, ())
    onnx_tokens = exported.generate(onnx_state, rows, prompt.explanation_ids, TOKENS, ())
    assert all(len(t) == TOKENS for t in ref_tokens)
    # A decode repeating one token would make the comparison prove little.
    assert max(len(set(t)) for t in ref_tokens) >= 4
    assert onnx_tokens == ref_tokens


def test_float16_export_runs_and_stays_close(models, tmp_path, inspection) -> None:
    out = tmp_path / "fp16"
    manifest = export_checkpoint(models["ratio4_tied"], 64, out, dtype="float16")
    assert manifest.dtype == manifest.io_dtype == "float16"
    assert np.load(out / manifest.embedding["file"], mmap_mode="r").dtype == np.float16
    reference = TorchBackend(load_model(str(models["ratio4_tied"])))
    exported = OnnxRuntimeBackend(out)
    pixels = random_tiles(2, manifest.grid_thw)
    visual = reference.encode(pixels, manifest.grid_thw)
    assert np.abs(exported.encode(pixels, manifest.grid_thw).embeds - visual.embeds).max() <= 2e-2
    prompt = build_prompt(reference.loaded.tokenizer, inspection, visual.tokens_per_image)
    ids = np.tile(prompt.input_ids, (2, 1))
    ref_logits, _ = reference.prefill(ids, visual, prompt.option_ids)
    onnx_logits, state = exported.prefill(ids, visual, prompt.option_ids)
    assert np.abs(softmax(onnx_logits) - softmax(ref_logits)).max() <= 2e-2
    assert [len(t) for t in exported.generate(state, [0, 1], prompt.explanation_ids, 4, ())] == [4, 4]


def test_bfloat16_export_is_valid_and_needs_cuda_in_onnxruntime(models, tmp_path) -> None:
    out = tmp_path / "bf16"
    manifest = export_checkpoint(models["ratio4_tied"], 32, out, dtype="bfloat16")
    assert manifest.dtype == "bfloat16" and manifest.io_dtype == "float32"  # numpy has no bfloat16
    for graph in manifest.graphs.values():
        onnx.checker.check_model(str(out / graph.file))
    table = np.load(out / manifest.embedding["file"], mmap_mode="r")
    assert table.dtype == np.uint16  # bfloat16 bits
    with pytest.raises(ModelError, match="CUDA"):
        OnnxRuntimeBackend(out, providers=["CPUExecutionProvider"])


# -- bad inputs ---------------------------------------------------------------------------


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path) -> None:
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    (other / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match="not Qwen3-VL") as error:
        export_checkpoint(other, 64, tmp_path / "out")
    assert "Qwen3-VL" in (error.value.hint or "")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tile", [48, 100, 0, 16])
def test_a_tile_that_is_not_a_multiple_of_32_is_refused(models, tmp_path, tile) -> None:
    with pytest.raises(ExportError, match="multiple of 32") as error:
        export_checkpoint(models["ratio4_tied"], tile, tmp_path / "out")
    assert "--tile" in (error.value.hint or "")


def test_an_output_directory_with_another_models_graphs_is_refused(models, exports, tmp_path) -> None:
    import shutil

    taken = tmp_path / "taken"
    shutil.copytree(exports[("ratio3_untied", 64)], taken)
    with pytest.raises(ExportError, match="another model") as error:
        export_checkpoint(models["ratio4_tied"], 64, taken)
    assert "--force" in (error.value.hint or "")
    assert read_manifest(taken).model.name == "ratio3_untied"  # untouched
    manifest = export_checkpoint(models["ratio4_tied"], 64, taken, force=True)
    assert read_manifest(taken).model == manifest.model
    # Re-exporting the same model into its own directory is fine (e.g. another tile size).
    export_checkpoint(models["ratio4_tied"], 32, taken)


def test_an_output_directory_with_unlabelled_graphs_is_refused(models, tmp_path) -> None:
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "model.onnx").write_bytes(b"")
    with pytest.raises(ExportError, match="without a manifest"):
        export_checkpoint(models["ratio4_tied"], 64, stray)


def test_a_broken_or_missing_manifest_is_a_clear_error(exports, tmp_path) -> None:
    with pytest.raises(ModelError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "line-inspector-onnx", "format_version": 99}))
    with pytest.raises(ModelError, match="format version"):
        read_manifest(tmp_path)
    data = json.loads((exports[("ratio4_tied", 32)] / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="missing .*vision.onnx"):
        read_manifest(tmp_path)


# -- the CLI ------------------------------------------------------------------------------


def test_cli_exports_and_checks_with_one_json_line(models, tmp_path, capsys) -> None:
    from inspector.cli import main

    out = tmp_path / "cli"
    assert main(["export", "onnx", "--model", str(models["ratio4_tied"]), "--tile", "32", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["export", "check", "--model", str(models["ratio4_tied"]), "--onnx", str(out), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["vision_max_abs_diff"] <= TOL and report["prob_max_abs_diff"] <= TOL
    assert report["greedy_tokens_match"] is True and report["greedy_tokens"] == 32 and report["passed"] is True


def test_cli_reports_bad_inputs_without_a_traceback(models, tmp_path, capsys) -> None:
    from inspector.cli import main

    code = main(["export", "onnx", "--model", str(models["ratio4_tied"]), "--tile", "50", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "multiple of 32" in err and "Traceback" not in err
    assert main(["export", "check", "--model", str(models["ratio4_tied"]), "--onnx", str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_export_errors_are_inspector_errors() -> None:
    assert issubclass(ExportError, InspectorError)


def test_a_checkpoint_written_by_transformers_alone_exports_with_parity(tmp_path) -> None:
    """No project marker, sharded weights with an index, saved by transformers itself: the path a real
    Qwen/Qwen3-VL-* directory takes."""
    from transformers import Qwen3VLForConditionalGeneration

    from export.parity import check_parity
    from inspector.models import RANDOM_MARKER, build_tiny_tokenizer, tiny_config

    checkpoint = tmp_path / "third-party"
    torch.manual_seed(7)
    spec = TinySpec(text_layers=3, vision_depth=3, deepstack_indexes=(0, 1, 2))
    Qwen3VLForConditionalGeneration(tiny_config(spec)).save_pretrained(checkpoint, max_shard_size="10MB")
    build_tiny_tokenizer().save_pretrained(checkpoint)
    assert (checkpoint / "model.safetensors.index.json").is_file() and not (checkpoint / RANDOM_MARKER).exists()
    export_checkpoint(checkpoint, 32, tmp_path / "onnx")
    report = check_parity(checkpoint, tmp_path / "onnx", batch=2, tokens=8)
    assert report.passed and report.prob_max_abs_diff <= TOL and report.greedy_tokens_match
    backend = OnnxRuntimeBackend(tmp_path / "onnx")
    assert backend.info.random_weights is False  # nothing marks it random: verdicts are not labelled so

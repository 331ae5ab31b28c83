"""FP8 export: ModelOpt calibration on the station's tiles, standard Q/DQ graphs, ONNX Runtime parity.

One tiny random model of the real architecture is calibrated once on a small generated clip
and exported (tile 32). Its verdicts mean nothing; the tests check the mechanics:

- the graphs hold only standard ops: ``QuantizeLinear`` with a ``float8e4m3fn`` zero point
  and FP8 weight initializers behind ``DequantizeLinear``, none of ModelOpt's ``trt::`` ops;
- exactly the language model's linears are quantised (not lm_head, not the vision tower);
- ONNX Runtime's FP8 graph reproduces the torch fake-quant model (ModelOpt's own reference)
  to 1e-4 on the option logits, while differing from the unquantised model by more than that
  (the quantisation is really there);
- the manifest records precision, calibration fingerprint, tile count and layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

pytest.importorskip("modelopt.torch.quantization", reason="FP8 export needs the fp8 extra (nvidia-modelopt)")
pytest.importorskip("onnx_graphsurgeon", reason="FP8 export needs the fp8 extra (onnx-graphsurgeon)")

from export.onnx_export import export_model  # noqa: E402
from export.parity import DEFAULT_INSPECTION  # noqa: E402
from export.quantize.calibration import CalibrationError, calibration_tiles  # noqa: E402
from export.quantize.fp8 import Fp8Export, QuantizedTextGraph, calibrate, quant_config  # noqa: E402
from export.text_graph import VERDICT, TextGraph  # noqa: E402
from inspector.artifacts.identity import identify_checkpoint  # noqa: E402
from inspector.artifacts.manifest import read_manifest  # noqa: E402
from inspector.config import TilingConfig  # noqa: E402
from inspector.models import load_model  # noqa: E402

TILE = 32
CALIB_TILES = 6
# Both sides round the same float32 values to E4M3 (round-to-nearest-even, saturating) and
# multiply in float32; only summation order differs (~1e-7 on these logits).
PARITY_TOL = 1e-4
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
pytestmark = pytest.mark.slow  # one calibration + FP8 export of the tiny model, ~20-30 s


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inspector.demo_data import write_demo_clip

    out = tmp_path_factory.mktemp("fp8-footage")
    write_demo_clip(out, frames=4, size=(128, 96), fps=4, seed=0)
    return out / "clip.mp4"


@pytest.fixture(scope="module")
def fp8_export(tiny_model_dir: Path, footage: Path, tmp_path_factory: pytest.TempPathFactory):
    loaded = load_model(str(tiny_model_dir))
    calibration = calibration_tiles(footage, TilingConfig(tile=TILE, overlap=0.0), CALIB_TILES)
    layers = calibrate(loaded.model, loaded.tokenizer, DEFAULT_INSPECTION, calibration, batch=3)
    hooks = Fp8Export(calibration, layers)
    out = tmp_path_factory.mktemp("fp8-export")
    manifest = export_model(loaded.model, identify_checkpoint(tiny_model_dir), TILE, out, quantization=hooks)
    return loaded, calibration, out, manifest


def _graph(out: Path, name: str) -> onnx.ModelProto:
    return onnx.load(str(out / f"{name}.onnx"))


def test_graphs_hold_standard_fp8_qdq_only(fp8_export) -> None:
    loaded, _, out, _ = fp8_export
    layers = loaded.model.config.text_config.num_hidden_layers
    for name in ("verdict", "decoder"):
        graph = _graph(out, name)
        onnx.checker.check_model(graph)
        assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"}
        assert [o.domain for o in graph.opset_import if o.domain not in ("", "ai.onnx")] == []
        quantize = [n for n in graph.graph.node if n.op_type == "QuantizeLinear"]
        assert len(quantize) == len(PROJECTIONS) * layers  # one per linear input
        inits = {t.name: t for t in graph.graph.initializer}
        for node in quantize:
            assert inits[node.input[2]].data_type == onnx.TensorProto.FLOAT8E4M3FN
        fp8_weights = [t for t in graph.graph.initializer
                       if t.data_type == onnx.TensorProto.FLOAT8E4M3FN and np.prod(t.dims) > 1]  # fmt: skip
        assert len(fp8_weights) == len(PROJECTIONS) * layers
    for name in ("vision", "vision_bytes"):
        ops = {n.op_type for n in _graph(out, name).graph.node}
        assert not ops & {"QuantizeLinear", "DequantizeLinear"}


def test_exactly_the_language_model_linears_are_quantised(fp8_export) -> None:
    loaded, _, _, manifest = fp8_export
    layers = loaded.model.config.text_config.num_hidden_layers
    owners = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn"}
    expected = {
        f"model.language_model.layers.{i}.{owners.get(p, 'mlp')}.{p}" for i in range(layers) for p in PROJECTIONS
    }
    recorded = manifest.quantization["layers"]
    assert set(recorded) == expected
    assert all(r["weight_amax"] > 0 and r["input_amax"] > 0 for r in recorded.values())


def test_manifest_records_precision_and_calibration(fp8_export) -> None:
    _, calibration, out, _ = fp8_export
    manifest = read_manifest(out)
    assert manifest.effective_precision == "fp8"
    assert manifest.dtype == "float32"  # everything outside the Q/DQ pairs
    calib = manifest.quantization["calibration"]
    assert calib["sha256"] == calibration.fingerprint
    assert calib["tiles"] == CALIB_TILES
    assert calib["frames_seen"] == 4
    assert manifest.quantization["vision_quantized"] is False
    assert manifest.quantization["graphs"]["verdict"]["quantize_linear"] > 0


def _text_inputs(model, seed: int = 0) -> tuple[torch.Tensor, ...]:
    config = model.config.text_config
    generator = torch.Generator().manual_seed(seed)
    batch, length, past = 2, 5, 3
    deepstack = len(model.config.vision_config.deepstack_visual_indexes)
    kv = (batch, config.num_key_value_heads, past, config.head_dim)
    args = [
        torch.randn(batch, length, config.hidden_size, generator=generator) * 0.5,
        torch.arange(past, past + length).view(1, 1, -1).expand(3, batch, -1).contiguous(),
        torch.ones(batch, past + length, dtype=torch.long),
        torch.randn(deepstack, batch, length, config.hidden_size, generator=generator) * 0.1,
    ]
    args += [torch.randn(kv, generator=generator) * 0.5 for _ in range(2 * config.num_hidden_layers)]
    args.append(torch.tensor([0, 1, 2, 3], dtype=torch.long))
    return tuple(args)


def test_onnxruntime_fp8_graph_matches_the_fake_quant_reference(fp8_export, tiny_model_dir: Path) -> None:
    import onnxruntime as ort

    loaded, _, out, _ = fp8_export
    args = _text_inputs(loaded.model)
    with torch.no_grad():
        fake_quant = QuantizedTextGraph(loaded.model, VERDICT, torch.float32)(*args)[0].numpy()
        plain_model = load_model(str(tiny_model_dir)).model
        unquantised = TextGraph(plain_model, VERDICT, torch.float32)(*args)[0].numpy()
    session = ort.InferenceSession(str(out / "verdict.onnx"), providers=["CPUExecutionProvider"])
    feeds = {spec.name: value.numpy() for spec, value in zip(session.get_inputs(), args)}
    fp8 = session.run(["option_logits"], feeds)[0]
    assert np.abs(fp8 - fake_quant).max() <= PARITY_TOL
    assert np.abs(fp8 - unquantised).max() > 10 * PARITY_TOL  # the FP8 rounding is really in the graph


def test_onnxruntime_backend_runs_the_fp8_export(fp8_export, tiny_model_dir: Path) -> None:
    from inspector.backends.onnxruntime import OnnxRuntimeBackend
    from inspector.backends.torch import TorchBackend
    from inspector.classify import softmax
    from inspector.prompting import build_prompt

    _, calibration, out, _ = fp8_export
    backend = OnnxRuntimeBackend(out, model_dir=tiny_model_dir)
    assert backend.info.precision == "fp8"
    reference = TorchBackend(load_model(str(tiny_model_dir)))
    tiles = calibration.patches[:3]
    probabilities = []
    for runner in (backend, reference):
        visual = runner.encode(tiles, calibration.grid_thw)
        prompt = build_prompt(reference.loaded.tokenizer, DEFAULT_INSPECTION, visual.tokens_per_image)
        ids = np.broadcast_to(prompt.input_ids, (visual.batch, prompt.length))
        probabilities.append(softmax(runner.prefill(ids, visual, prompt.option_ids)[0]))
    # Random tiny weights: the option probabilities sit near uniform and FP8 moves them a little.
    assert np.abs(probabilities[0] - probabilities[1]).max() < 0.05


def test_calibration_tiles_are_reproducible_and_spread_over_the_footage(footage: Path) -> None:
    tiling = TilingConfig(tile=TILE, overlap=0.0, global_view=False)
    first = calibration_tiles(footage, tiling, 5, seed=0)
    assert calibration_tiles(footage, tiling, 5, seed=0).fingerprint == first.fingerprint
    assert calibration_tiles(footage, tiling, 5, seed=1).fingerprint != first.fingerprint
    assert first.tiles == 5 and first.frames_seen == 4 and first.tiles_seen == 4 * 4 * 3
    everything = calibration_tiles(footage, tiling, 10_000)
    assert everything.tiles == everything.tiles_seen == 48  # fewer than asked: all of them, in order
    both = calibration_tiles([footage, footage], tiling, 5)  # several sources: one draw over all their tiles
    assert (both.frames_seen, both.tiles_seen) == (8, 96)


@pytest.mark.parametrize("count", [0, -3])
def test_calibration_refuses_a_non_positive_count(footage: Path, count: int) -> None:
    with pytest.raises(CalibrationError, match="not a positive number"):
        calibration_tiles(footage, TilingConfig(tile=TILE), count)


def test_quantize_vision_adds_the_vision_blocks_linears_only() -> None:
    entries = quant_config(quantize_vision=True)["quant_cfg"]
    default = quant_config()["quant_cfg"]
    added = [e["quantizer_name"] for e in entries[len(default) :]]
    assert len(added) == 8 and all(name.startswith("*visual.blocks.*.") for name in added)
    assert not any("patch_embed" in name or "merger" in name for name in added)


def test_quantize_vision_exports_fp8_vision_blocks(tiny_model_dir: Path, footage: Path, tmp_path: Path) -> None:
    from inspector.backends.onnxruntime import OnnxRuntimeBackend

    loaded = load_model(str(tiny_model_dir))
    calibration = calibration_tiles(footage, TilingConfig(tile=TILE), 2)
    layers = calibrate(loaded.model, loaded.tokenizer, DEFAULT_INSPECTION, calibration, quantize_vision=True)
    vision = [name for name in layers if ".visual." in name]
    depth = loaded.model.config.vision_config.depth
    assert len(vision) == 4 * depth
    assert not any("patch_embed" in name or "merger" in name or "lm_head" in name for name in layers)
    hooks = Fp8Export(calibration, layers, quantize_vision=True)
    export_model(loaded.model, identify_checkpoint(tiny_model_dir), TILE, tmp_path, quantization=hooks)
    for name in ("vision", "vision_bytes"):
        assert hooks.graphs[name]["quantize_linear"] == 4 * depth
        assert hooks.graphs[name]["fp8_weights"] == 4 * depth
    features = OnnxRuntimeBackend(tmp_path).encode(calibration.patches, calibration.grid_thw)
    assert np.isfinite(features.embeds).all() and np.isfinite(features.deepstack).all()


def test_missing_modelopt_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from export.quantize.fp8 import QuantizationError, require_modelopt

    # The graph pass is our own (export.quantize.streaming_qdq): only ModelOpt's torch half is needed.
    monkeypatch.setitem(sys.modules, "modelopt.torch.quantization", None)  # as if it were not installed
    with pytest.raises(QuantizationError, match="ModelOpt") as error:
        require_modelopt()
    assert "line-inspector[fp8]" in error.value.hint


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precision", "fp8"], "needs calibration data"),
        (["--calib", "clip.mp4"], "only apply to --precision fp8"),
        (["--precision", "fp8", "--calib", "missing.mp4"], "does not exist"),
    ],
)
def test_export_cli_refuses_bad_fp8_arguments(tiny_model_dir: Path, tmp_path: Path, extra, message) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "inspector", "export", "onnx", "--model", str(tiny_model_dir), "--tile", "32",
               "--out", str(tmp_path / "out"), *extra]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode != 0
    assert message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_export_check_points_fp8_graphs_to_compare(fp8_export, tiny_model_dir: Path) -> None:
    import subprocess
    import sys

    _, _, out, _ = fp8_export
    command = [sys.executable, "-m", "inspector", "export", "check", "--model", str(tiny_model_dir), "--onnx", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "FP8 graphs" in run.stderr and "inspector compare" in run.stderr

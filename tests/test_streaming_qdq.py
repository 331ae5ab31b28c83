"""The streaming FP8 Q/DQ pass against ModelOpt's own (whole-graph) exporter, on a tiny model's traced graph.

One tiny random model of the real architecture is calibrated with ModelOpt (tile 32) and its
verdict graph traced with ModelOpt's ``trt::`` quantisers, in float32 and in float16 (the
full-size export's dtype). Both rewrites of that same traced graph must give the same FP8
weight bytes and the same option logits in ONNX Runtime, and the streamed graph must hold
standard ops only, its FP8 weights in their own external data file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("modelopt.torch.quantization", reason="FP8 export needs the fp8 extra (nvidia-modelopt)")
pytest.importorskip("onnx_graphsurgeon", reason="the reference rewrite is ModelOpt's (needs onnx-graphsurgeon)")

from export.onnx_export import export_model  # noqa: E402
from export.parity import DEFAULT_INSPECTION  # noqa: E402
from export.quantize.calibration import calibration_tiles  # noqa: E402
from export.quantize.fp8 import Fp8Export, calibrate  # noqa: E402
from export.quantize.streaming_qdq import StreamingQdqError, rewrite_fp8_qdq  # noqa: E402
from inspector.artifacts.identity import identify_checkpoint  # noqa: E402
from inspector.config import TilingConfig  # noqa: E402
from inspector.models import load_model  # noqa: E402

pytestmark = pytest.mark.slow  # one calibration + trace per dtype, ~20 s each


class _KeepTraced(Fp8Export):
    """Copies each traced text graph (with ModelOpt's trt:: ops) aside before the pass rewrites it."""

    keep: Path

    def process_graph(self, name: str, path: Path) -> None:
        if name == "verdict":
            shutil.copytree(path.parent, self.keep, dirs_exist_ok=True)
        super().process_graph(name, path)


def _modelopt_rewrite(path: Path, out: Path) -> onnx.ModelProto:
    """ModelOpt's FP8QuantExporter on the whole graph (weights loaded): the reference."""
    import contextlib
    import io

    from modelopt.onnx.export import FP8QuantExporter

    model = onnx.load(str(path))
    with contextlib.redirect_stdout(io.StringIO()):
        model = FP8QuantExporter.process_model(model)
    for node in model.graph.node:
        if node.domain == "trt":
            node.domain = ""
    quantized = {n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    for value in model.graph.value_info:
        if value.name in quantized:
            value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT8E4M3FN
    imports = [entry for entry in model.opset_import if entry.domain != "trt"]
    del model.opset_import[:]
    model.opset_import.extend(imports)
    onnx.save_model(model, str(out))
    return model


@pytest.fixture(scope="module", params=["float32", "float16"])
def traced(request, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from inspector.demo_data import write_demo_clip

    work = tmp_path_factory.mktemp(f"qdq-{request.param}")
    write_demo_clip(work / "clip", frames=2, size=(128, 96), fps=4, seed=0)
    loaded = load_model(str(tiny_model_dir), dtype=request.param)
    calibration = calibration_tiles(work / "clip" / "clip.mp4", TilingConfig(tile=32, overlap=0.0), 4)
    layers = calibrate(loaded.model, loaded.tokenizer, DEFAULT_INSPECTION, calibration, batch=2)
    hooks = _KeepTraced(calibration, layers)
    hooks.keep = work / "traced"
    export_model(loaded.model, identify_checkpoint(tiny_model_dir), 32, work / "export", quantization=hooks)
    return hooks.keep / "verdict.onnx", request.param


def _feeds(session, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in session.get_inputs():
        shape = [2 if not isinstance(d, int) else d for d in spec.shape]
        if spec.name == "position_ids":
            feeds[spec.name] = np.broadcast_to(np.arange(shape[2]), shape).astype(np.int64).copy()
        elif spec.name == "attention_mask":
            feeds[spec.name] = np.ones(shape, dtype=np.int64)
        elif spec.name == "option_ids":
            feeds[spec.name] = np.array([32, 33, 34], dtype=np.int64)
        elif spec.name.startswith("past_"):
            shape[2] = 0
            feeds[spec.name] = np.zeros(shape, dtype=np.float16 if "16" in spec.type else np.float32)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float16 if "16" in spec.type else np.float32)
    return feeds


def test_streamed_graph_equals_modelopts_rewrite(traced: tuple[Path, str], tmp_path: Path) -> None:
    import onnxruntime as ort

    path, dtype = traced
    work = tmp_path / "work"
    shutil.copytree(path.parent, work)
    reference = _modelopt_rewrite(work / path.name, work / "reference.onnx")
    result = rewrite_fp8_qdq(work / path.name, work / "streamed.onnx")
    streamed = onnx.load(str(work / "streamed.onnx"))

    assert {(n.domain, n.op_type) for n in streamed.graph.node if n.domain not in ("", "ai.onnx")} == set()
    assert all(entry.domain != "trt" for entry in streamed.opset_import)
    weights = {t.name: t for t in streamed.graph.initializer if t.data_type == onnx.TensorProto.FLOAT8E4M3FN}
    fp8 = {n: t for n, t in weights.items() if len(t.dims) == 2}
    assert result.weights == len(fp8) == 7 * 4  # seven projections in each of the 4 text layers
    fp8_type = onnx.TensorProto.FLOAT8E4M3FN
    reference_fp8 = sorted(
        t.raw_data for t in reference.graph.initializer if t.data_type == fp8_type and len(t.dims) == 2
    )
    assert sorted(t.raw_data for t in fp8.values()) == reference_fp8  # the same FP8 bytes, weight for weight
    assert result.activations == 7 * 4
    assert (work / result.data_file).stat().st_size >= result.fp8_bytes

    rng = np.random.default_rng(0)
    options = ort.SessionOptions()
    sessions = [ort.InferenceSession(str(work / f), options, providers=["CPUExecutionProvider"])
                for f in ("reference.onnx", "streamed.onnx")]  # fmt: skip
    feeds = _feeds(sessions[0], rng)
    ours, theirs = (s.run(["option_logits"], feeds)[0] for s in sessions)
    assert np.isfinite(ours).all()
    np.testing.assert_array_equal(ours, theirs, err_msg=dtype)


def test_a_dequantiser_without_its_quantiser_is_refused(traced: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = traced
    work = tmp_path / "work"
    shutil.copytree(path.parent, work)
    model = onnx.load(str(work / path.name), load_external_data=False)
    first = next(n for n in model.graph.node if n.op_type == "TRT_FP8QuantizeLinear")
    first.op_type = "Identity"
    first.domain = ""
    del first.input[1:]
    onnx.save_model(model, str(work / "broken.onnx"))
    with pytest.raises(StreamingQdqError, match="dequantiser without its quantiser"):
        rewrite_fp8_qdq(work / "broken.onnx")

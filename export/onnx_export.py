"""Qwen3-VL checkpoint -> ONNX graphs + manifest: the first half of the deployment path.

The split follows NVIDIA's TensorRT-Edge-LLM for this model:

- ``vision.onnx``: tiles' patches -> merged visual embeddings + DeepStack features,
  baked for one tile size (``export.vision_graph``); ``vision_bytes.onnx``: the same from
  the pipeline's uint8 patch bytes (normalised and repeated in the graph);
- ``decoder.onnx``: the text decoder with KV cache in/out and full-vocabulary logits at the
  last position, for explanations (``export.text_graph``);
- ``verdict.onnx``: the same decoder returning only the answer options' logits;
- ``embed_tokens.npy``: the token embedding table, looked up on the host;
- ``weights.onnx.data``: every graph's weights, each tensor once (``export.external_data``);
- ``manifest.json`` (``inspector.artifacts.manifest``).

Exported with the TorchScript exporter (``dynamo=False``): with explicit tensors in and
out it traces these wrappers into standard ONNX ops; the dynamo exporter trips on the
vision attention's data-dependent split.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from export.external_data import DATA_FILE, SharedWeights, relocate_weights
from export.text_graph import DECODER, VERDICT, TextGraph, text_io_names
from export.vision_graph import VisionGraph, tile_grid
from inspector.artifacts.identity import ModelIdentity, identify_checkpoint
from inspector.artifacts.manifest import MANIFEST, Manifest, describe_graph, write_manifest
from inspector.backends.base import PATCH_BYTES_DIM, PATCH_DIM
from inspector.config import TILE_MULTIPLE
from inspector.errors import InspectorError, ModelError

log = logging.getLogger(__name__)

EXPORT_DTYPES = ("float32", "float16", "bfloat16")
DEFAULT_OPSET = 19
MIN_OPSET, MAX_OPSET = 19, 20  # 19: FLOAT8 Q/DQ for the FP8 step; 20: the TorchScript exporter's newest
EMBEDDING_FILE = "embed_tokens.npy"
GRAPH_FILES = {
    "vision": "vision.onnx",
    "vision_bytes": "vision_bytes.onnx",
    DECODER: "decoder.onnx",
    VERDICT: "verdict.onnx",
}
_TEMP_DIR = ".export-tmp"


class ExportError(InspectorError):
    """An export cannot run with the given arguments or output directory."""


class Quantization(Protocol):
    """Hooks of a quantised export (``export.quantize.fp8.Fp8Export``): text graph, graph pass, manifest."""

    def text_graph(self, model: Any, form: str, io_dtype: Any) -> TextGraph: ...

    def process_graph(self, name: str, path: Path) -> None: ...

    def describe(self) -> dict[str, Any]: ...


def check_tile(tile: int) -> int:
    if tile < TILE_MULTIPLE or tile % TILE_MULTIPLE:
        lower = max(tile // TILE_MULTIPLE * TILE_MULTIPLE, TILE_MULTIPLE)
        raise ExportError(
            f"tile size {tile} px is not a positive multiple of {TILE_MULTIPLE} "
            "(one Qwen3-VL visual token covers 32x32 px)",
            f"use --tile {lower} or {lower + TILE_MULTIPLE}, the same value as tiling.tile in the station config",
        )
    return tile


def check_output_dir(out_dir: Path, identity: ModelIdentity, *, force: bool = False) -> None:
    """Refuse to mix graphs of two models in one directory (unless ``force``)."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportError(f"output path {out_dir} exists and is not a directory", "choose a directory for --out")
    hint = f"choose another --out directory, or pass --force to replace the graphs in {out_dir}"
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        try:
            other = ModelIdentity.from_json(json.loads(manifest.read_text())["model"])
        except (ValueError, KeyError, TypeError):
            if not force:
                raise ExportError(f"{out_dir} holds an unreadable {MANIFEST}", hint) from None
            return
        if not other.same_model(identity) and not force:
            raise ExportError(
                f"{out_dir} already holds the graphs of another model ({other.name}, config "
                f"{other.config_sha256[:12]}, weights {other.weights_sha256[:12]}), not {identity.name} "
                f"(config {identity.config_sha256[:12]}, weights {identity.weights_sha256[:12]})",
                hint,
            )
    elif any(out_dir.glob("*.onnx")) and not force:
        raise ExportError(f"{out_dir} holds ONNX graphs without a {MANIFEST}; they may belong to another model", hint)


@contextlib.contextmanager
def _stage(name: str, every_s: float = 30.0) -> Iterator[None]:
    """Log a stage's start, a heartbeat while it runs (a 4B export takes minutes), and its time."""
    start = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            log.info("... still %s (%.0f s)", name, time.monotonic() - start)

    log.info("%s", name)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        log.info("%s: done in %.1f s", name, time.monotonic() - start)


def _torch_export(module: Any, args: tuple[Any, ...], path: Path, names: tuple[list[str], list[str]],
                  dynamic_axes: dict[str, dict[int, str]], opset: int) -> None:  # fmt: skip
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every shape it reads; the parity tests are the real check.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=names[0],
            output_names=names[1],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def _text_example(model: Any, form: str, io_dtype: Any) -> tuple[tuple[Any, ...], dict[str, dict[int, str]]]:
    import torch

    config = model.config.text_config
    batch, length, past = 2, 3, 2  # non-trivial sizes so no dimension is traced as a constant 1
    layers, deepstack = config.num_hidden_layers, len(model.config.vision_config.deepstack_visual_indexes)
    kv_shape = (batch, config.num_key_value_heads, past, config.head_dim)
    args: list[Any] = [
        torch.zeros(batch, length, config.hidden_size, dtype=io_dtype),
        torch.arange(past, past + length).view(1, 1, -1).expand(3, batch, -1).contiguous(),
        torch.ones(batch, past + length, dtype=torch.long),
        torch.zeros(deepstack, batch, length, config.hidden_size, dtype=io_dtype),
    ]
    args += [torch.zeros(kv_shape, dtype=io_dtype) for _ in range(2 * layers)]
    axes: dict[str, dict[int, str]] = {
        "inputs_embeds": {0: "batch", 1: "length"},
        "position_ids": {1: "batch", 2: "length"},
        "attention_mask": {0: "batch", 1: "total"},
        "deepstack_embeds": {1: "batch", 2: "length"},
    }
    for layer in range(layers):
        for kind in ("key", "value"):
            axes[f"past_{kind}_{layer}"] = {0: "batch", 2: "past"}
            axes[f"present_{kind}_{layer}"] = {0: "batch", 2: "total"}
    if form == VERDICT:
        args.append(torch.tensor([0, 1], dtype=torch.long))
        axes["option_ids"] = {0: "options"}
        axes["option_logits"] = {0: "batch", 1: "options"}
    else:
        axes["logits"] = {0: "batch"}
    return tuple(args), axes


def _save_embedding(model: Any, path: Path) -> dict[str, Any]:
    import torch

    weight = model.model.language_model.embed_tokens.weight.detach()
    dtype = str(weight.dtype).removeprefix("torch.")
    # numpy has no bfloat16: keep its bits as uint16 (the backend widens them exactly).
    array = weight.view(torch.uint16).numpy() if weight.dtype == torch.bfloat16 else weight.numpy()
    np.save(path, array)
    return {"file": path.name, "dtype": dtype, "shape": list(weight.shape)}


def _versions() -> dict[str, str]:
    import onnx
    import torch
    import transformers

    from inspector.version import __version__

    return {"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
            "line_inspector": __version__}  # fmt: skip


def export_model(model: Any, identity: ModelIdentity, tile: int, out_dir: str | Path, *,
                 opset: int = DEFAULT_OPSET, quantization: Quantization | None = None) -> Manifest:  # fmt: skip
    """Export an already-loaded ``Qwen3VLForConditionalGeneration`` (its dtype is the export dtype).

    ``quantization`` (FP8): its text graph replaces ``TextGraph``, each traced graph goes
    through its ``process_graph`` before the weights move, the manifest records it.

    The text layers' linear weights are re-laid out in place (same values, transposed
    storage; see ``export.text_graph.transposed_in_place``) so that no transposed copy of the
    model is ever held: the model stays usable, its matmuls merely read strided weights.
    """
    import torch

    check_tile(tile)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported", f"use an opset from {MIN_OPSET} to {MAX_OPSET}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # No manifest until every file is written: a failed export never looks complete.
    (out_dir / MANIFEST).unlink(missing_ok=True)
    temp = out_dir / _TEMP_DIR
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    model.eval()
    dtype = model.lm_head.weight.dtype
    io_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
    grid = tile_grid(tile, model.config.vision_config.patch_size)
    text_config = model.config.text_config
    graphs = {}
    try:
        with SharedWeights(out_dir / DATA_FILE) as shared:
            for name, source in (("vision", "pixel_values"), ("vision_bytes", "patch_bytes")):
                with _stage(f"exporting the {name} graph for {tile} px tiles (grid {grid})"):
                    vision = VisionGraph(model.model.visual, grid, io_dtype, patch_bytes=name == "vision_bytes")
                    example = (
                        torch.zeros(2, vision.patches, PATCH_BYTES_DIM, dtype=torch.uint8)
                        if vision.patch_bytes
                        else torch.zeros(2, vision.patches, PATCH_DIM, dtype=io_dtype)
                    )
                    axes = {source: {0: "batch"}, "embeds": {0: "batch"}, "deepstack": {1: "batch"}}
                    names = ([source], ["embeds", "deepstack"])
                    _torch_export(vision, (example,), temp / GRAPH_FILES[name], names, axes, opset)
                    if quantization is not None:
                        quantization.process_graph(name, temp / GRAPH_FILES[name])
                    relocate_weights(temp / GRAPH_FILES[name], out_dir / GRAPH_FILES[name], shared)
                    shutil.rmtree(temp)
                    temp.mkdir()
            for form in (VERDICT, DECODER):
                with _stage(f"exporting the {form} graph ({text_config.num_hidden_layers} layers)"):
                    args, axes = _text_example(model, form, io_dtype)
                    names = text_io_names(text_config.num_hidden_layers, form)
                    graph = (TextGraph if quantization is None else quantization.text_graph)(model, form, io_dtype)
                    _torch_export(graph, args, temp / GRAPH_FILES[form], names, axes, opset)
                    if quantization is not None:
                        quantization.process_graph(form, temp / GRAPH_FILES[form])
                    relocate_weights(temp / GRAPH_FILES[form], out_dir / GRAPH_FILES[form], shared)
                    shutil.rmtree(temp)
                    temp.mkdir()
        log.info("weights: %.1f MB written, %.1f MB shared between graphs",
                 shared.bytes_written / 1e6, shared.bytes_shared / 1e6)  # fmt: skip
        for name, file in GRAPH_FILES.items():
            graphs[name] = describe_graph(out_dir / file)
        embedding = _save_embedding(model, out_dir / EMBEDDING_FILE)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    config = model.config
    manifest = Manifest(
        model=identity,
        tile=tile,
        grid_thw=grid,
        tokens_per_tile=vision.tokens,
        dtype=str(dtype).removeprefix("torch."),
        io_dtype=str(io_dtype).removeprefix("torch."),
        opset=opset,
        graphs=graphs,
        embedding=embedding,
        text={
            "hidden": text_config.hidden_size,
            "layers": text_config.num_hidden_layers,
            "heads": text_config.num_attention_heads,
            "kv_heads": text_config.num_key_value_heads,
            "head_dim": text_config.head_dim,
            "vocab_size": text_config.vocab_size,
            "deepstack_layers": len(config.vision_config.deepstack_visual_indexes),
        },
        token_ids={
            name: int(getattr(config, f"{name}_token_id"))
            for name in ("image", "video", "vision_start", "vision_end")
            if getattr(config, f"{name}_token_id", None) is not None
        },
        spatial_merge=config.vision_config.spatial_merge_size,
        external_data=DATA_FILE,
        exporter=_versions(),
        precision=None if quantization is None else quantization.describe()["precision"],
        quantization=None if quantization is None else quantization.describe(),
    )
    write_manifest(out_dir, manifest)
    log.info("export of %s for %d px tiles written to %s", identity.name, tile, out_dir)
    return manifest


def export_checkpoint(model_dir: str | Path, tile: int, out_dir: str | Path, *, dtype: str = "float32",
                      opset: int = DEFAULT_OPSET, force: bool = False,
                      quantize: Callable[[Any], Quantization] | None = None) -> Manifest:  # fmt: skip
    """Export any local Qwen3-VL checkpoint directory (4B/8B, Instruct/Thinking, or a tiny test model).

    ``quantize`` (e.g. ``export.quantize.fp8``'s calibration) gets the loaded model and
    returns the hooks of a quantised export.
    """
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    check_tile(tile)
    if dtype not in EXPORT_DTYPES:
        raise ExportError(f"export dtype {dtype!r} is not supported", f"use one of {', '.join(EXPORT_DTYPES)}")
    with _stage(f"identifying {model_dir}"):
        identity = identify_checkpoint(model_dir)
    check_output_dir(Path(out_dir), identity, force=force)
    with _stage(f"loading {model_dir} in {dtype}"):
        try:
            model = Qwen3VLForConditionalGeneration.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
        except (OSError, ValueError) as error:
            raise ModelError(f"cannot load {model_dir}: {str(error).splitlines()[0]}",
                             "the checkpoint directory looks incomplete") from None  # fmt: skip
    quantization = None if quantize is None else quantize(model.eval())
    return export_model(model.eval(), identity, tile, out_dir, opset=opset, quantization=quantization)

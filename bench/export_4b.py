"""Export the full-size Qwen3-VL-4B architecture (random weights, float16) and measure it.

    python bench/export_4b.py [--tile 512] [--out DIR] [--keep]

Prints one JSON line: wall time (build, identity hash, export), peak RSS, and the sizes
of the graphs, the shared weights file and the embedding table. Not run in CI: it needs
~9 GB of RAM for the model, ~17 GB of disk, and minutes of CPU.

The model is built directly in float16 (about 8.9 GB) so nothing ever holds a float32
copy; the exporter writes weights tensor by tensor into one external data file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from export.onnx_export import export_model  # noqa: E402
from inspector.artifacts.identity import identify_state  # noqa: E402
from inspector.models import tiny_config  # noqa: E402
from inspector.models.fullsize import QWEN3_VL_4B  # noqa: E402

log = logging.getLogger("bench.export_4b")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux


def build_model():  # -> Qwen3VLForConditionalGeneration in float16
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)  # parameters are born float16: no float32 copy
    try:
        model = Qwen3VLForConditionalGeneration(tiny_config(QWEN3_VL_4B))
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tile", type=int, default=512, help="tile size the vision graph is baked for (default 512)")
    parser.add_argument("--out", type=Path, help="export directory (default: a temporary one, deleted unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the exported graphs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)

    out = args.out or Path(tempfile.mkdtemp(prefix="export-4b-"))
    began = time.monotonic()
    log.info("building Qwen3-VL-4B with random float16 weights")
    model = build_model()
    params = sum(p.numel() for p in model.parameters())
    built = time.monotonic()
    log.info("built %.2f B parameters in %.0f s (peak RSS %.1f GiB)", params / 1e9, built - began, peak_rss_gib())
    identity = identify_state(model, "Qwen3-VL-4B-random-fp16", random_weights=True)
    hashed = time.monotonic()
    manifest = export_model(model, identity, args.tile, out)
    exported = time.monotonic()
    sizes = {path.name: path.stat().st_size for path in sorted(out.iterdir()) if path.is_file()}
    result = {
        "bench": "export_4b",
        "model": "Qwen3-VL-4B architecture, random weights",
        "parameters": params,
        "dtype": manifest.dtype,
        "tile": manifest.tile,
        "opset": manifest.opset,
        "wall_s": round(exported - began, 1),
        "build_s": round(built - began, 1),
        "hash_s": round(hashed - built, 1),
        "export_s": round(exported - hashed, 1),
        "peak_rss_gib": round(peak_rss_gib(), 2),
        "bytes": sizes,
        "total_gib": round(sum(sizes.values()) / 1024**3, 2),
        "out": str(out) if args.keep or args.out else None,
    }
    if not (args.keep or args.out):
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The station runtime shared by replay and the edge: overrides, sinks, the error policy, the layering."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from inspector.backends.registry import backend_names
from inspector.config import parse_config
from inspector.frames import Frame
from inspector.model_warning import random_weights_warning
from inspector.pipeline import load_inspector
from inspector.runtime import ErrorPolicy, FailFast, Overrides, build_sinks

ROOT = Path(__file__).resolve().parents[1]


def _station(tiny_model_dir: Path, **tiling) -> dict:
    data = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    data["tiling"] = {"tile": 64, "overlap": 0.25, "global_view": True, **tiling}
    data["model"]["path"] = str(tiny_model_dir)
    data["inspection"]["explanation"] = "never"
    return data


def test_replay_and_the_edge_offer_the_same_model_overrides() -> None:
    from edge.service import build_parser as edge_parser
    from inspector.cli import build_parser

    edge = edge_parser().parse_args(["-c", "x.yaml", "--backend", "onnxruntime", "--onnx", "g", "--device", "auto"])
    replay = build_parser().parse_args(
        ["replay", "a.mp4", "-c", "x.yaml", "--backend", "onnxruntime", "--onnx", "g", "--device", "auto"]
    )
    for args in (edge, replay):
        assert (args.backend, args.onnx_dir, args.device) == ("onnxruntime", "g", "auto")
    with pytest.raises(SystemExit):
        edge_parser().parse_args(["-c", "x.yaml", "--backend", "tflite"])
    assert backend_names() == ["torch", "onnxruntime", "tensorrt"]


def test_overrides_apply_model_and_source_together(tiny_model_dir: Path) -> None:
    config = parse_config(_station(tiny_model_dir))
    changed = Overrides(onnx_dir="graphs", device="cpu", source="clip.mp4", loop=True).apply(config)
    assert (changed.model.backend, changed.model.onnx_dir, changed.model.device) == (
        "onnxruntime",
        Path("graphs"),
        "cpu",
    )
    assert (changed.source.uri, changed.source.loop) == ("clip.mp4", True)
    assert Overrides().apply(config) == config


def test_error_policy_counts_failures_and_fail_fast_carries_the_verdict(tiny_model_dir: Path) -> None:
    # A rect ROI right of a 96-px frame: inspecting that frame really raises (no stand-in model).
    inspector = load_inspector(parse_config(_station(tiny_model_dir, roi={"rect": [128, 0, 192, 64]})))
    good = Frame(np.full((128, 192, 3), 90, np.uint8), "cam", 0, datetime.now(UTC))
    small = Frame(np.full((96, 96, 3), 90, np.uint8), "cam", 1, datetime.now(UTC))
    seen = []
    policy = ErrorPolicy(keep=1, on_failure=seen.append)
    assert policy.judge(inspector, good).error is None
    verdicts = [policy.judge(inspector, small) for _ in range(3)]
    assert all(v.verdict == "UNCERTAIN" and "ROI rect" in v.error for v in verdicts)
    assert policy.count == 3 and len(policy.failures) == 1 and len(seen) == 3
    assert policy.last is not None and policy.last.frame_index == 1
    with pytest.raises(FailFast) as stopped:
        ErrorPolicy(fail_fast=True).judge(inspector, small)
    assert stopped.value.verdict.verdict == "UNCERTAIN" and "--fail-fast" in stopped.value.hint
    assert random_weights_warning(inspector.backend.info) is not None  # the tiny model is labelled


def test_sinks_follow_the_output_path_and_publish_url(tiny_model_dir: Path, tmp_path: Path) -> None:
    inspector = load_inspector(parse_config(_station(tiny_model_dir)))
    built = build_sinks(inspector.config, inspector, jsonl=tmp_path / "out.jsonl", mqtt=None)
    assert built.mqtt is None and len(built.sinks) == 1
    frame = Frame(np.full((128, 192, 3), 90, np.uint8), "cam", 0, datetime.now(UTC))
    built.sinks[0].publish(inspector.inspect(frame))
    built.close()
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_runtime_never_imports_the_exporter() -> None:
    """export/ depends on inspector/, never the reverse (no exception: `inspector export` is an entry point)."""
    offenders = []
    for path in sorted((ROOT / "inspector").rglob("*.py")):
        if any(name == "export" or name.startswith("export.") for name in _imports(path)):
            offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []

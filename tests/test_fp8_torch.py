"""``model.dtype: fp8`` on the torch backend: refused, with the reason and the alternatives, where it cannot run.

torchao float8 needs a CUDA GPU of compute capability >= 8.9; these machines have none, so
only the refusals run here (the FP8 arithmetic itself runs in bench/gpu.py on a GPU).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inspector.backends.fp8 import FP8_MIN_CAPABILITY, fp8_capability_problem, supports_fp8
from inspector.backends.torch import TorchConfig, check_torch_fp8, load_torch_backend, torch_fp8_problem
from inspector.errors import ModelError


@given(st.integers(5, 12), st.integers(0, 9))
def test_fp8_gate_is_compute_capability_8_9(major: int, minor: int) -> None:
    assert supports_fp8((major, minor)) == ((major, minor) >= (8, 9))
    problem = fp8_capability_problem("GPU", (major, minor))
    assert (problem is None) == supports_fp8((major, minor))
    if problem is not None:
        assert f"{major}.{minor}" in problem and "8.9" in problem


@pytest.mark.parametrize(
    ("device", "gpu", "capability", "torchao", "expected"),
    [
        ("cpu", None, None, True, "the device is cpu"),
        ("cuda", "NVIDIA A100-SXM4-80GB", (8, 0), True, "compute capability 8.0"),
        ("cuda:1", "Orin", (8, 7), True, "compute capability 8.7"),
        ("cuda", "NVIDIA H200", (9, 0), False, "needs torchao"),
    ],
)
def test_refusals_name_the_reason_and_the_way_out(device, gpu, capability, torchao, expected) -> None:
    problem = torch_fp8_problem(device, gpu, capability, torchao)
    assert problem is not None and expected in str(problem)
    assert problem.hint and ("bfloat16" in problem.hint or "torchao" in problem.hint)


def test_an_fp8_capable_gpu_with_torchao_is_accepted() -> None:
    assert FP8_MIN_CAPABILITY == (8, 9)
    assert torch_fp8_problem("cuda", "NVIDIA L4", (8, 9), True) is None
    assert torch_fp8_problem("cuda:0", "NVIDIA H200", (9, 0), True) is None


def test_cpu_is_refused_before_the_weights_load(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="needs a CUDA GPU"):
        check_torch_fp8("cpu")
    # The model path does not even exist: the refusal comes before loading anything.
    config = TorchConfig(path=str(tmp_path / "absent"), dtype="fp8", device="cpu")
    with pytest.raises(ModelError, match="fp8") as error:
        load_torch_backend(config)
    assert "onnxruntime" in error.value.hint

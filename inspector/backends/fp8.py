"""Which GPUs run FP8: one capability gate for the torch (torchao) and TensorRT backends.

FP8 tensor cores start at compute capability 8.9: Ada (L4, L40S, RTX 40), Hopper (H100,
H200), Blackwell, Jetson Thor. Ampere and Jetson Orin (8.0-8.7) have none: FP16 there.
"""

from __future__ import annotations

FP8_MIN_CAPABILITY = (8, 9)


def supports_fp8(capability: tuple[int, int]) -> bool:
    return tuple(capability) >= FP8_MIN_CAPABILITY


def fp8_capability_problem(gpu: str, capability: tuple[int, int]) -> str | None:
    """Why ``gpu`` cannot run FP8 (a sentence), or None when it can."""
    if supports_fp8(capability):
        return None
    major, minor = capability
    need = ".".join(map(str, FP8_MIN_CAPABILITY))
    return (
        f"{gpu} has compute capability {major}.{minor}; FP8 needs {need} or newer "
        "(Ada L4/L40S/RTX 40, Hopper H100/H200, Blackwell, Jetson Thor)"
    )

"""The frozen LLM's dtype and attention kernel; `dtype: auto` picks the fastest the device runs well.

A CPU with bfloat16 dot-product instructions (`BF16_CPU_FLAGS`) runs bfloat16 matmuls at twice the float32 rate or
more; without them bfloat16 is emulated and slower (docs/BENCHMARKS.md). On CPU, transformers' eager attention runs
2.4x faster in bfloat16 than the fused SDPA kernel, so a bfloat16 LLM on CPU gets eager attention. What training
changes (`TRAINED_MODULES`) stays float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags() -> list[str]:
    """The CPU's feature flags (the first `flags` line of /proc/cpuinfo); [] where it cannot be read."""
    try:
        lines = CPUINFO.read_text().splitlines()
    except OSError:
        return []
    return next((value.split() for key, _, value in (line.partition(":") for line in lines) if key.strip() == "flags"), [])


def cpu_bf16_flags() -> list[str]:
    """Which of `BF16_CPU_FLAGS` this CPU reports."""
    flags = set(cpu_flags())
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


class LLMDtypeChoice(NamedTuple):
    """What the frozen LLM runs in: `dtype` ("float32" or "bfloat16"), the `attn_implementation` to set (None:
    transformers' default), and the `reason`, for the log."""

    dtype: str
    attn_implementation: str | None
    reason: str


def resolve_llm_dtype(requested: str, device: torch.device | str) -> LLMDtypeChoice:
    """The dtype the frozen LLM runs in on `device`: `requested` ("float32", "bfloat16"), or the fastest for "auto"."""
    device = torch.device(device)
    if requested != "auto":
        dtype, reason = requested, "set in the run's settings"
    elif device.type == "cpu":
        found = cpu_bf16_flags()
        if found:
            dtype, reason = "bfloat16", f"dtype auto: the CPU reports {', '.join(found)} (native bfloat16 dot products)"
        else:
            dtype, reason = "float32", (f"dtype auto: the CPU reports none of {', '.join(BF16_CPU_FLAGS)}, so bfloat16 "
                                        "would be emulated (slower than float32)")
    elif device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        dtype = "bfloat16" if supported else "float32"
        reason = f"dtype auto: the GPU {'supports' if supported else 'does not support'} bfloat16"
    else:
        dtype, reason = "float32", f"dtype auto: bfloat16 speed on {device.type!r} devices is not known here"
    return LLMDtypeChoice(dtype, "eager" if dtype == "bfloat16" and device.type == "cpu" else None, reason)

"""The frozen LLM's dtype and attention kernel: `dtype: auto` picks the fastest the device runs well.

On a CPU with bfloat16 dot-product instructions (x86 `avx512_bf16` or `amx_bf16`) a bfloat16
matmul runs at about twice the float32 rate or more; on one without them bfloat16 is emulated
and several times slower than float32 (docs/BENCHMARKS.md). So "auto" reads the CPU's flags:
bfloat16 where they are present, float32 elsewhere; on CUDA bfloat16 where the GPU supports it.
Only the frozen LLM (and the frozen collaborative tables) take that dtype: what training changes
(`TRAINED_MODULES`) stays float32.

On CPU, torch's fused attention kernel (SDPA, flash) gains nothing in bfloat16 and its backward
is slower than in float32, while transformers' eager attention (batched matmuls, softmax in
float32) runs 2.4x faster in bfloat16 than that kernel: a bfloat16 LLM on CPU gets eager attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

# "auto" besides the concrete dtypes of `arguments.DTYPES`.
AUTO_DTYPE = "auto"
# CPU flags (/proc/cpuinfo) of instructions that compute bfloat16 dot products natively.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags() -> list[str]:
    """The CPU's feature flags (the first `flags` line of /proc/cpuinfo); [] where it cannot be read."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return value.split()
    return []


def cpu_bf16_flags() -> list[str]:
    """Which of `BF16_CPU_FLAGS` this CPU reports."""
    flags = set(cpu_flags())
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


@dataclass(frozen=True)
class LLMDtypeChoice:
    """What the frozen LLM runs in.

    Args:
        dtype: "float32" or "bfloat16".
        attn_implementation: transformers' attention implementation to set, or None to keep the default.
        reason: why, for the log.
    """

    dtype: str
    attn_implementation: str | None
    reason: str


def cpu_attention_implementation(dtype: str, device: torch.device | str) -> str | None:
    """"eager" for a bfloat16 LLM on CPU (see the module docstring), else None (transformers' default)."""
    return "eager" if dtype == "bfloat16" and torch.device(device).type == "cpu" else None


def resolve_llm_dtype(requested: str, device: torch.device | str) -> LLMDtypeChoice:
    """The dtype the frozen LLM runs in on `device`: `requested`, or the fastest one when it is "auto".

    Args:
        requested: "auto", "float32" or "bfloat16".
        device: where the LLM runs.
    """
    device = torch.device(device)
    if requested != AUTO_DTYPE:
        dtype, reason = requested, "set in the run's settings"
    elif device.type == "cpu":
        found = cpu_bf16_flags()
        if found:
            dtype, reason = "bfloat16", f"dtype auto: the CPU reports {', '.join(found)} (native bfloat16 dot products)"
        else:
            dtype, reason = "float32", (f"dtype auto: the CPU reports none of {', '.join(BF16_CPU_FLAGS)}, so bfloat16 "
                                        "would be emulated (slower than float32)")
    elif device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            dtype, reason = "bfloat16", "dtype auto: the GPU supports bfloat16"
        else:
            dtype, reason = "float32", "dtype auto: the GPU does not support bfloat16"
    else:
        dtype, reason = "float32", f"dtype auto: bfloat16 speed on {device.type!r} devices is not known here"
    return LLMDtypeChoice(dtype, cpu_attention_implementation(dtype, device), reason)


__all__ = ["AUTO_DTYPE", "BF16_CPU_FLAGS", "LLMDtypeChoice", "cpu_attention_implementation", "cpu_bf16_flags",
           "cpu_flags", "resolve_llm_dtype"]

"""What this machine's CPU can do, as far as serving on vLLM's CPU backend cares.

Read from /proc/cpuinfo (Linux x86 flag names); elsewhere there are no flags and nothing is
claimed. `nanoserve doctor` reports it; `nanoserve serve` warns from it.
"""

from pathlib import Path

# oneDNN has a bfloat16 matmul only with one of these; without them vLLM falls back to a slow one
# ("Failed to create oneDNN linear"). Measured on an AVX2 CPU with the 124M model
# (docs/QUANTIZATION.md's table): prefill ~5x slower than float32, 16 concurrent requests at
# 0.29x its throughput.
BF16_MATMUL_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

BF16_SLOW = (
    "bfloat16 on a CPU without AVX512-BF16 or AMX is slow (oneDNN has no bfloat16 matmul "
    "here: prefill ~5x slower than float32, throughput under load ~0.3x on the 124M "
    "model); it saves memory only"
)


def cpu_flags() -> set[str]:
    """The first CPU's feature flags from /proc/cpuinfo (x86 names); empty where there are none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def bfloat16_is_slow(flags: set[str]) -> bool:
    """True on an x86 CPU (flags known) without a bfloat16 matmul; unknown flags claim nothing."""
    return bool(flags) and not flags & BF16_MATMUL_FLAGS

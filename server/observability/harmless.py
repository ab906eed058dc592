"""The warnings a normal start on CPU gives, none of them a fault here, logged at their true level.

Each entry names one message narrowly (its logger and how it begins); a record that matches keeps
its logger and text and gets a lower level. The logging config (logs.config) puts the filter on
the handler of every process, vLLM's included; the stderr relay (logs.relay_stderr) applies it to
lines written without a logger. Why each one is harmless: docs/OBSERVABILITY.md, "Logs".
"""

import logging
import re
from collections.abc import Callable

INFO, DEBUG = logging.INFO, logging.DEBUG


def _begins(pattern: str) -> Callable[[str], bool]:
    """Whether a message begins with `pattern` (a regular expression)."""
    return lambda message, p=re.compile(pattern): p.match(message) is not None


def _window_plus_one(message: str) -> bool:
    """vLLM warns that max_model_len exceeds the model's positions: nanoserve asks for one more
    than the window (vllm_engine._engine_args) and never feeds it. A larger excess is not ours
    and keeps its warning."""
    m = re.match(r"User-specified max_model_len \((\d+)\) is greater .*?=(\d+)(\.0)? ", message)
    return m is not None and int(m[1]) == int(m[2]) + 1


# logger -> [(does the message match, the level it is logged at)]
KNOWN: dict[str, list[tuple[Callable[[str], bool], int]]] = {
    "vllm.config.model": [(_window_plus_one, INFO)],
    # the CPU build's kernels are C++; the Triton installed (xgrammar's) is a GPU Triton
    "vllm.triton_utils.importing": [
        (_begins(r"Triton is installed, but doesn't include CPU"), INFO)
    ],
    "vllm.platforms.cpu": [
        (_begins(r"Triton is not installed\. triton-cpu is expected on x86"), INFO),
        (_begins(r"Reset SSM cache type to float32"), DEBUG),  # GPT-2 keeps no SSM state
    ],
    "vllm.config.vllm": [
        (_begins(r"Model Runner V2 requires Triton; using the V1 model runner"), INFO),
        # vLLM's CPU platform picks that compilation mode itself (inductor, traced once)
        (_begins(r"Inductor compilation was disabled by user settings"), INFO),
    ],
    # a tuning hint (tcmalloc, Intel's OpenMP), not a fault: every figure here was measured
    # without them (neither the Dockerfile nor scripts/setup.sh preloads them)
    "vllm.v1.worker.cpu_worker": [
        (_begins(r"lib(tcmalloc|iomp) is not found in LD_PRELOAD"), INFO)
    ],
    # a weight swap (engine.vllm_adapter.WeightSwap): the tied output layer is not in the
    # checkpoint, and WeightSwap repacks it from the new embedding right after
    "vllm.model_executor.model_loader.reload.layerwise": [
        (_begins(r"ParallelLMHead: Failed to load weights$"), INFO)
    ],
    # torch deprecated an attribute that vLLM's dispatcher reads; nothing of ours uses it
    "py.warnings": [
        (
            _begins(
                r".*/vllm/triton_utils/dispatcher\.py:\d+: "
                r"FutureWarning: `torch\.distributed\.reduce_op` is deprecated"
            ),
            DEBUG,
        )
    ],
    "stderr": [
        # torch binding the engine's worker to the machine's NUMA node, as vLLM asked it to
        (_begins(r"\[W[\d :.]+ utils\.cpp:\d+\] Warning: NUMA binding: Using MEMBIND"), INFO),
        # vLLM's spawned processes import triton_utils before they apply the logging config:
        # logging's last resort prints its message bare, without the logger's name
        (
            _begins(r"Triton is installed, but doesn't include CPU backend\. Disabling Triton\.$"),
            INFO,
        ),
    ],
}


def true_level(record: logging.LogRecord) -> int | None:
    """The level a known-harmless warning is logged at, or None for every other record."""
    entries = KNOWN.get(record.name)
    if entries is None or record.levelno != logging.WARNING:
        return None
    message = record.getMessage()
    return next((level for matches, level in entries if matches(message)), None)


class Harmless(logging.Filter):
    """Lowers the known-harmless warnings to their true level, and drops those that fall below
    `level`, the configured one (their logger let them through as warnings). Other records pass:
    their logger has decided."""

    def __init__(self, level: str = "INFO"):
        super().__init__()
        self.level = logging.getLevelNamesMapping()[level.upper()]

    def filter(self, record: logging.LogRecord) -> bool:
        level = true_level(record)
        if level is None:
            return True
        record.levelno, record.levelname = level, logging.getLevelName(level)
        return level >= self.level

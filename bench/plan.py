"""What a run measures: per model, the prompt/output lengths and, per server, the load levels.

The naive servers run one request at a time, so their throughput cannot grow with concurrency
(more clients only queue longer), and on the 124M model they need 0.1-0.5 s per token: they
get fewer requests and fewer levels, which the report's `requests` column shows. Each level's
client gets a deadline sized to the server (`level_timeout`): a one-at-a-time server answers its
requests in sequence, an engine `concurrency` at a time.
"""

from dataclasses import dataclass

from bench.servers import ENGINES
from bench.vllm_bench_load import Level


@dataclass(frozen=True)
class Case:
    """One model's benchmark: lengths in tokens, and the levels each server is measured at."""

    model: str
    input_len: int
    output_len: int
    levels: dict[str, tuple[Level, ...]]
    # generous seconds per generated token for one request on a busy machine (~20x the quiet
    # figure: the demo's naive server took 3-5 ms, 100 ms under contention; the 124M's 0.2 s)
    token_s: float = 0.1


def level_timeout(case: Case, server: str, level: Level) -> float:
    """The client's deadline for one level: its requests at `case.token_s` a token, one at a
    time for a serialized server, `concurrency` at a time for an engine; at least a minute."""
    requests = level.prompts + level.warmups + 1  # + vllm bench serve's initial test request
    at_once = level.concurrency if server in ENGINES else 1
    return max(60.0, requests * case.output_len * case.token_s / at_once)


def levels(*spec: tuple[int, int], warmups: int | None = None) -> tuple[Level, ...]:
    """Levels from (concurrency, prompts) pairs. Warm-up requests: `min(concurrency, 8)` each
    (fills the engine's batch once), or `warmups` at the first level only (a serialized server
    has no batch to fill; its first request just pays lazy initialisation)."""
    if warmups is not None:
        return tuple(Level(c, n, warmups if i == 0 else 0) for i, (c, n) in enumerate(spec))
    return tuple(Level(c, n, min(c, 8)) for c, n in spec)


# c=128 and c=256: an engine's throughput must not fall past c=64 (nor errors appear)
_DEMO_ENGINE = levels((1, 16), (4, 32), (16, 128), (64, 256), (128, 512), (256, 1024))
# A serialized server gains nothing from more clients: c=64 only queued 64 requests for a minute
# or more on a shared machine (a 2-minute TTFT tail), so its ratio at 64 is against its best level.
_DEMO_NAIVE = levels((1, 8), (4, 8), (16, 16), warmups=1)
_GPT2_ENGINE = levels((1, 4), (4, 8), (16, 32), (64, 64))

FULL = (
    Case(
        "shakespeare_char",
        input_len=32,
        output_len=64,
        levels={
            "nanoserve": _DEMO_ENGINE,
            "vllm": _DEMO_ENGINE,
            "naive": _DEMO_NAIVE,
            "hf": _DEMO_NAIVE,
        },
    ),
    Case(
        "gpt2-124m",
        input_len=64,
        output_len=64,
        token_s=2.0,
        levels={
            "nanoserve": _GPT2_ENGINE,
            "vllm": _GPT2_ENGINE,
            # 0.1-0.4 s a token on 2 cores: few requests, no warm-up (a 64-token one costs ~15 s)
            "naive": levels((1, 2), warmups=0),
            "hf": levels((1, 2), (4, 4), warmups=0),
        },
    ),
)

# CI: the demo model, two levels, a handful of requests; nanoserve and the naive server unless
# --servers asks for others (SMOKE_SERVERS)
_SMOKE = levels((1, 4), (4, 8), warmups=1)
SMOKE = (
    Case("shakespeare_char", 16, 16, dict.fromkeys(("nanoserve", "vllm", "naive", "hf"), _SMOKE)),
)
SMOKE_SERVERS = ("nanoserve", "naive")


def max_concurrency(case: Case) -> int:
    """The most clients an engine of `case` serves at once (its batch must hold them all)."""
    return max(lv.concurrency for s in ENGINES if s in case.levels for lv in case.levels[s])

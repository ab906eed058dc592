"""The four servers under test: the command that starts each, and one running instance of it.

(a) nanoserve, (b) vLLM's own OpenAI server with the same engine settings, (c) the seed's naive
server (no KV cache), (d) Hugging Face `generate`. They are started with
`harness.processes.ServerProcess`, whose working directory (the repo root) is where
`python -m bench.*` finds the baselines.
"""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

LABELS = {
    "nanoserve": "nanoserve",
    "vllm": "vLLM api_server",
    "naive": "naive (no KV cache)",
    "hf": "HF generate",
}
ENGINES = ("nanoserve", "vllm")  # the two that wrap vLLM's engine
READY_PATH = {"nanoserve": "/ready", "vllm": "/health", "naive": "/ready", "hf": "/ready"}


@dataclass(frozen=True)
class EngineSettings:
    """What both vLLM-based servers are given, spelled identically to each."""

    max_model_len: int
    max_num_seqs: int = 64  # >= the highest concurrency, so nothing waits in the engine's queue
    dtype: str = "float32"  # vLLM's own "auto" would run the float32 model in bfloat16 on CPU
    seed: int = 0
    max_logprobs: int = 5  # nanoserve's default cap; vLLM's is 20 (costs nothing unless asked)

    def flags(self) -> list[str]:
        names = ("dtype", "max_model_len", "max_num_seqs", "seed", "max_logprobs")
        return [x for n in names for x in (f"--{n.replace('_', '-')}", str(getattr(self, n)))]


def base_env(kv_cache_gib: int) -> dict[str, str]:
    """Environment for every server: no telemetry, a small KV cache, same keep-alive everywhere."""
    return {
        **os.environ,
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
        # vLLM's server closes idle connections after 5 s by default; nanoserve after 75 s. Equal
        # here, so neither pays reconnects the other doesn't (with vLLM's 5 s, `vllm bench serve`
        # saw ServerDisconnectedError under CPU contention on this kind of machine).
        "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "75",
        # nanoserve's keep-alive comments off: `vllm bench serve` 0.32 loses a stream whose ping
        # arrives in a read of its own (30 of 32 streams of the 124M model in bfloat16 at c=16,
        # whose first tokens took over 15 s); vLLM's server sends none
        "NANOSERVE_SSE_PING_INTERVAL": "0",
    }


def command(
    server: str, model_dir: Path, port: int, api_key: str, eng: EngineSettings
) -> list[str]:
    """The exact command line that starts `server` on 127.0.0.1:`port`."""
    py, where = sys.executable, ["--host", "127.0.0.1", "--port", str(port)]
    # `--api-key=KEY`, one argument: a random key can begin with "-", which argparse would take
    # for an option (1 run in 64 failed to start: "--api-key: expected one argument")
    key = f"--api-key={api_key}"
    if server == "nanoserve":
        serve = [py, "-m", "nanoserve.cli", "serve", str(model_dir), *where]
        return [*serve, key, "--log-format", "text", *eng.flags()]
    if server == "vllm":
        entry = [py, "-m", "vllm.entrypoints.launchers.api_server.entry", "--model", str(model_dir)]
        named = ["--served-model-name", model_dir.name, *where]  # served name = dir name, as ours
        return [*entry, *named, key, *eng.flags()]
    module = {"naive": "bench.naive_server", "hf": "bench.hf_server"}[server]
    return [py, "-m", module, str(model_dir), "--port", str(port)]

"""The four servers under test: the command that starts each, and one running instance of it.

(a) nanoserve, (b) vLLM's own OpenAI server with the same engine settings, (c) the seed's naive
server (no KV cache), (d) Hugging Face `generate`. Every instance listens on 127.0.0.1 only, runs
in its own process group, and is stopped by its PID (SIGTERM, then SIGKILL to that group).
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

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
        # here, so neither pays reconnects the other doesn't (REFERENCE §5).
        "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "75",
    }


def command(
    server: str, model_dir: Path, port: int, api_key: str, eng: EngineSettings
) -> list[str]:
    """The exact command line that starts `server` on 127.0.0.1:`port`."""
    py, where = sys.executable, ["--host", "127.0.0.1", "--port", str(port)]
    if server == "nanoserve":
        serve = [py, "-m", "nanoserve.cli", "serve", str(model_dir), *where]
        return [*serve, "--api-key", api_key, "--log-format", "text", *eng.flags()]
    if server == "vllm":
        entry = [py, "-m", "vllm.entrypoints.launchers.api_server.entry", "--model", str(model_dir)]
        named = ["--served-model-name", model_dir.name, *where]  # served name = dir name, as ours
        return [*entry, *named, "--api-key", api_key, *eng.flags()]
    script = {"naive": "naive_server.py", "hf": "hf_server.py"}[server]
    return [py, str(BENCH / script), str(model_dir), "--port", str(port)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One started server; `with` it to be sure it is stopped."""

    def __init__(self, server: str, cmd: list[str], port: int, env: dict, log_path: Path):
        self.server, self.cmd, self.port = server, cmd, port
        self.log_path = log_path
        self._log = log_path.open("wb")
        # own session: the engine's worker processes share its group, so a stuck stop can end them
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_ready(self, timeout: float) -> float:
        """Seconds until the readiness route answered 200; RuntimeError if it died or timed out."""
        t0 = time.monotonic()
        url = f"http://127.0.0.1:{self.port}{READY_PATH[self.server]}"
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.server} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1)
        raise RuntimeError(f"{self.server} not ready after {timeout:.0f} s")

    def stop(self, grace: float = 60) -> None:
        """SIGTERM the server's PID; after `grace` s, SIGKILL whatever is left of its group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        # leftovers (or a server that ignored SIGTERM): only this server's own process group
        with contextlib.suppress(ProcessLookupError):  # the group is gone: nothing left over
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

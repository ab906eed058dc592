"""Servers for the tests: the real one as a subprocess on 127.0.0.1 (`python -m
nanoserve.server`), and what tests read from a running one. Processes are started and stopped
by `harness/processes.py`, the helper the benchmarks and the reliability scenarios use too;
every process started is ended, by PID.
"""

from pathlib import Path

from harness.probes import samples, scrape, wait_until
from harness.processes import ServerProcess, free_port, nanoserve, server_env

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "shakespeare_char"
START_TIMEOUT = 420  # s; a cold engine start on 2 busy cores (compile included) takes ~100 s
FAKE_START_TIMEOUT = 60

SECRET = "e2e-secret-0123456789abcdef0123456789"  # the keyed server's JWT secret
KEYS = """\
# id     key          limits
alice    sk-alice     rpm=2
bob      sk-bob       tpm=200
ops      sk-ops       admin
carol    sk-carol
prom     sk-prom      metrics
viewer   sk-viewer
victim   sk-victim
"""

__all__ = [
    "DEMO",
    "KEYS",
    "REPO",
    "SECRET",
    "ServerProcess",
    "decode",
    "encode",
    "free_port",
    "metric",
    "server_process",
    "wait_until",
]  # fmt: skip


def server_process(args: list[str], log_path: Path, env: dict | None = None, cwd: Path = REPO):
    """`python -m nanoserve.server ARGS` on a free loopback port with a small KV cache (not yet
    ready)."""
    port = free_port()
    cmd = [*nanoserve(args, port), "--cpu-kvcache-space", "1"]
    return ServerProcess(cmd, port, log_path, env=server_env(**(env or {})), cwd=cwd)


def metric(base_url: str, name: str) -> float:
    """One sample of the server's /metrics, named as the page writes it (labels included)."""
    values = samples(scrape(base_url))
    assert name in values, f"{name} not in /metrics"
    return values[name]


def encode(vocab, text):
    return [vocab.itos.index(c) for c in text]


def decode(vocab, ids):
    return "".join(vocab.itos[i] for i in ids)

"""The deployment the reliability scenarios break: a real nginx running the project's own
deploy/nginx/nginx.conf, two nanoserve replicas on the demo model, a real Redis. All on loopback.

Every process is started here and ended here by its own PID (harness/processes.py's ServerProcess
for the replicas); Redis and the replicas can be stopped and started again on the same port, since
nginx's upstream list is read once, when it starts.
"""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from harness.nginx import Nginx
from harness.probes import scrape, summed
from harness.processes import (
    ROOT,
    Redis,
    ServerProcess,
    free_port,
    nanoserve,
    server_env,
)

DEMO = ROOT / "examples" / "shakespeare_char"
LOGS = ROOT / "reliability" / "results" / "raw"  # git-ignored
READY_TIMEOUT = 900  # s; an engine start takes 1-2 min on 2 cores, 7+ min when others load them
GROUP_GONE_TIMEOUT = 300  # s; how long a stopped replica's last process may take to end
CLIENT_KEY, METRICS_KEY, SLOTS_KEY, LIMITED_KEY = "sk-client", "sk-prom", "sk-slots", "sk-limited"
SLOTS = 4  # the `slots` caller's concurrency limit: what a leaked slot would take away
LIMITED_RPM = 20  # the `limited` caller's requests per window (the soak's 429s)
KEYS = f"""\
client   {CLIENT_KEY}
prom     {METRICS_KEY}    metrics
slots    {SLOTS_KEY}    concurrency={SLOTS}
limited  {LIMITED_KEY}    rpm={LIMITED_RPM}
"""


def server_flags() -> set[str]:
    """The flags this checkout's server knows: scenarios that need a newer one say so."""
    out = subprocess.run(
        [sys.executable, "-m", "nanoserve.server", "--help"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, env=server_env(),
    )  # fmt: skip
    return set(re.findall(r"--[a-z][a-z0-9-]+", out.stdout))


class Replica:
    """One nanoserve on a fixed port, started again (same port, maybe new flags) after it died."""

    def __init__(self, name: str, port: int, workdir: Path, model_args: list[str], core: int):
        self.name, self.port, self.workdir = name, port, workdir
        # vLLM's CPU backend binds its worker's OpenMP threads to cores ('auto': the first
        # ones, the same for every replica). Two replicas on one host then share one core and
        # starve each other: a new replica's worker waited minutes for a single time slice
        # next to a busy one. Each replica gets its own core, as on separate machines.
        self.core = core
        self.url = f"http://127.0.0.1:{port}"
        self.model_args = model_args  # MODEL, cache and names: what a rolling update changes
        self.extra: list[str] = []
        self.server: ServerProcess | None = None
        self.starts = 0

    def start(self) -> None:
        """Launch (not yet ready: `wait_ready`)."""
        self.starts += 1
        self.launched = time.monotonic()
        cmd = nanoserve([*self.model_args, *self.extra], self.port)
        env = server_env(VLLM_CPU_OMP_THREADS_BIND=str(self.core))
        log = self.workdir / f"{self.name}-{self.starts}.log"
        self.server = ServerProcess(cmd, self.port, log, env=env, name=self.name)

    def wait_ready(self) -> float:
        assert self.server is not None
        return self.server.wait_ready(READY_TIMEOUT)

    def wait_ready_since_start(self) -> float:
        """Seconds from launch to ready (the launch may have been a while ago)."""
        self.wait_ready()
        return round(time.monotonic() - self.launched, 1)

    @property
    def alive(self) -> bool:
        return self.server is not None and self.server.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.server is not None
        return self.server.proc.pid

    def stop(self, grace: float = 60) -> int | None:
        """Stop it, and wait until its engine's last process has ended too (the next start
        of this replica would share a core with a dying one)."""
        if self.server is None:
            return None
        code = self.server.stop(grace, group_gone=GROUP_GONE_TIMEOUT)
        self.gone_s = self.server.group_gone_s
        return code

    def engine_core(self) -> psutil.Process:
        """vLLM's engine core: the child process that holds the model and the scheduler."""
        children = psutil.Process(self.pid).children(recursive=True)
        cores = [p for p in children if "EngineCore" in " ".join([p.name(), *p.cmdline()])]
        assert cores, f"no EngineCore among {[(p.pid, p.name()) for p in children]}"
        return cores[0]

    def rss_mib(self) -> float:
        """Resident memory of the replica and every process under it (the engine core)."""
        procs = [psutil.Process(self.pid), *psutil.Process(self.pid).children(recursive=True)]
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total / 2**20

    def metrics(self) -> dict[str, float]:
        """This replica's /metrics, summed over labels: {sample name: value}."""
        return summed(scrape(self.url, {"Authorization": f"Bearer {METRICS_KEY}"}, timeout=5))

    def engine_busy(self) -> float:
        """Requests inside the engine: vLLM's running + waiting."""
        m = self.metrics()
        return m.get("vllm:num_requests_running", 0.0) + m.get("vllm:num_requests_waiting", 0.0)

    def ready_status(self) -> int | None:
        try:
            return httpx.get(self.url + "/ready", timeout=2).status_code
        except httpx.HTTPError:
            return None


class Topology:
    """Redis, replicas `a` and `b`, nginx in front. `with` it: everything ends at exit."""

    def __init__(self, replica_flags: dict[str, list[str]] | None = None, workdir=None):
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="nanoserve-rel-")
        self.workdir = Path(workdir or self._tmp.name)
        self.keyfile = self.workdir / "keys.txt"
        self.keyfile.write_text(KEYS)
        self.keyfile.chmod(0o600)
        self.cache = self.workdir / "cache"
        self.redis = Redis(self.workdir)
        self.flags = server_flags()
        self.model = "shakespeare" if "--model-alias" in self.flags else "shakespeare-v1"
        flags = replica_flags or {"a": [], "b": []}
        self.replicas = {}
        cores = os.cpu_count() or 1
        for i, (name, extra) in enumerate(flags.items()):
            args = self.model_args("shakespeare-v1")
            r = Replica(name, free_port(), self.workdir, args, core=i % cores)
            r.extra = extra
            self.replicas[name] = r
        self.nginx = Nginx(self.workdir, [r.port for r in self.replicas.values()])

    def model_args(self, served: str) -> list[str]:
        """MODEL and the flags every replica gets; `served` is its versioned model name."""
        args = [str(DEMO), "--cache-dir", str(self.cache), "--cpu-kvcache-space", "1"]
        args += ["--api-key-file", str(self.keyfile), "--ratelimit-storage", self.redis.url]
        args += ["--log-format", "json", "--served-model-name", served]
        if "--forwarded-allow-ips" in self.flags:  # nginx, on this host, names the clients
            args += ["--forwarded-allow-ips", "127.0.0.1"]
        if "--model-alias" in self.flags:
            args += ["--model-alias", "shakespeare"]
        return args

    def __enter__(self) -> "Topology":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.redis.start()
        self._convert_once()
        self.heal()
        self.nginx.start()

    def _convert_once(self) -> None:
        # both replicas would otherwise convert the checkpoint into the same cache directory at
        # once; the server's own resolver, run here first, leaves them a finished conversion
        from nanoserve.server.engine.model_source import resolve

        with contextlib.chdir(ROOT):  # the cache key includes the working directory
            resolve(str(DEMO), self.cache)

    def restart_dead(self) -> list[str]:
        """Launch again every replica whose process ended; their names (not yet ready)."""
        dead = [name for name, r in self.replicas.items() if not r.alive]
        for name in dead:
            self.replicas[name].stop(5)  # what is left of its process group
            self.replicas[name].start()
        return dead

    def heal(self) -> float:
        """Start every replica that is not running, together; seconds until all are ready."""
        t0 = time.monotonic()
        down = [r for r in self.replicas.values() if not r.alive]
        for r in down:
            r.start()
        with ThreadPoolExecutor(len(down) or 1) as pool:
            list(pool.map(Replica.wait_ready, down))
        return time.monotonic() - t0

    def stop(self) -> None:
        self.nginx.stop()
        for r in self.replicas.values():
            r.stop(grace=30)
        self.redis.stop()
        self._keep_logs()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _keep_logs(self) -> None:
        """nginx's and the replicas' logs of the last run, for whoever reads a failure."""
        LOGS.mkdir(parents=True, exist_ok=True)
        for old in LOGS.glob("*.log"):
            old.unlink()
        for log in self.workdir.glob("*.log"):
            shutil.copy(log, LOGS / log.name)

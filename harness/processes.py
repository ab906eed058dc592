"""Start, await and stop the server processes that the benchmarks, the reliability scenarios and
the tests run.

Every process listens on 127.0.0.1 only, runs in its own session (the engine's worker processes
share its group, so a stuck stop can end them too) and is stopped by its own PID: SIGTERM, then
after a grace period SIGKILL to that group alone. Waiting always has a deadline.
"""

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _ephemeral_range() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that no other process will
    be handed by the kernel before ours binds it.

    The port is picked at random *below* the kernel's ephemeral range. A port from `bind(0)` is
    in that range, and so is every port a process binds without choosing one: vLLM's engine
    binds one for torch.distributed's store at start. A port picked that way and bound a minute
    later (nginx, after both replicas are ready) was once taken by such a store in between: the
    port accepted connections and never answered, and every request through nginx hung.
    """
    ephemeral = _ephemeral_range()
    low = max(1024, ephemeral.start - 16384)
    for _ in range(200):
        port = random.randrange(low, ephemeral.start)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port in {low}-{ephemeral.start - 1} after 200 tries")


def nanoserve(args: list[str], port: int) -> list[str]:
    """The command that serves `args` on 127.0.0.1:`port`: `python -m nanoserve.server ARGS`."""
    return [
        sys.executable,
        "-m",
        "nanoserve.server",
        *args,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]


def server_env(**extra: str) -> dict[str, str]:
    """The environment every server started here runs in: this one, no usage reports sent to
    vLLM, and this checkout on the path (a server may run from another directory)."""
    return {**os.environ, "VLLM_NO_USAGE_STATS": "1", "PYTHONPATH": str(ROOT), **extra}


class ServerProcess:
    """One started server; `with` it to be sure it is stopped."""

    def __init__(
        self,
        cmd: list[str],
        port: int,
        log_path: Path,
        *,
        env: dict | None = None,
        cwd: Path = ROOT,
        name: str = "server",
    ):
        self.cmd, self.port, self.name = cmd, port, name
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env if env is not None else dict(os.environ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_ready(self, timeout: float, path: str = "/ready") -> float:
        """Seconds until `path` answered 200; RuntimeError (with the log's tail) if the process
        exited or the deadline passed first."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, grace: float = 60, group_gone: float = 0) -> int | None:
        """SIGTERM the PID; after `grace` s, SIGKILL what is left of its group. Returns the
        exit status (negative: the signal that ended it).

        With `group_gone` > 0, also wait up to that long until every process of the group has
        really ended (`self.group_gone_s`; None if some outlived the wait). A SIGKILLed engine
        worker can take minutes to die on a small VM, freeing its memory on the core the next
        engine is bound to: whoever starts one next should wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        exited = time.monotonic()
        # leftovers (or a server that ignored SIGTERM): only this server's own process group
        with contextlib.suppress(ProcessLookupError):  # the group is gone: nothing left over
            os.killpg(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait(10)
        self._log.close()
        self.group_gone_s = None
        while time.monotonic() - exited < group_gone:
            try:
                os.killpg(self.proc.pid, 0)  # anyone left? (signal 0 only asks)
            except ProcessLookupError:
                self.group_gone_s = round(time.monotonic() - exited, 1)
                break
            time.sleep(0.5)
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 3000) -> str:
        return self.log()[-n:]


def wait_port(port: int, timeout: float) -> None:
    """Until something listens on 127.0.0.1:`port`; RuntimeError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


class Redis:
    """redis-server on 127.0.0.1, its files in `workdir`; `stop`/`kill` and `start` keep its
    port, so a server outage and its recovery can be staged. Without persistence (the default)
    a restart starts empty; with it (an append-only file, fsynced on every write) the counts
    come back."""

    def __init__(self, workdir: Path, persistent: bool = False):
        self.port, self.workdir, self.proc = free_port(), workdir, None
        self.url = f"redis://127.0.0.1:{self.port}"
        self.cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        self.cmd += ["--save", "", "--dir", str(workdir), "--appendonly"]
        self.cmd += ["yes", "--appendfsync", "always"] if persistent else ["no"]

    def start(self) -> "Redis":
        with (self.workdir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, 20)  # a busy machine
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        """Gone at once, as in a crash (SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def redis_server(out: Path):
    """A throwaway redis-server on 127.0.0.1 (no persistence); its URL."""
    redis = Redis(out).start()
    try:
        yield redis.url + "/0"
    finally:
        redis.stop()

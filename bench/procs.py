"""Start, await and stop the server processes that the benchmarks and the tests run.

Every process listens on 127.0.0.1 only, runs in its own session (the engine's worker processes
share its group, so a stuck stop can end them too) and is stopped by its own PID: SIGTERM, then
after a grace period SIGKILL to that group alone. Waiting always has a deadline.
"""

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@contextlib.contextmanager
def redis_server(out: Path):
    """A throwaway redis-server on 127.0.0.1 (no persistence); its URL."""
    port = free_port()
    cmd = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    with (out / "redis.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=out)
    try:
        deadline = time.monotonic() + 20  # a busy machine
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


class CpuSampler:
    """CPU seconds used by a server's processes over time: its main process (the HTTP front
    end, which runs the API) apart from the rest of its process group (the engine's core and
    worker), sampled from /proc every `every` s in a thread while `with`-ed.

    On 2 cores every CPU second the front end spends is taken from the engine, so this is the
    front end's cost under the real engine, where bench/frontend.py measures it with a fake one.
    """

    def __init__(self, pid: int, every: float = 0.25):
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float, float]] = []  # (wall time, front s, rest s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), *group_cpu_seconds(self.pid)))
            if self._stop.wait(self.every):
                self.samples.append((time.time(), *group_cpu_seconds(self.pid)))
                return

    def between(self, t0: float, t1: float) -> tuple[float, float] | None:
        """(front, rest) CPU seconds used from wall time t0 to t1, interpolated between
        samples; None unless the samples cover that span."""
        if not self.samples or t0 < self.samples[0][0] or t1 > self.samples[-1][0]:
            return None
        a, b = self._at(t0), self._at(t1)
        return b[0] - a[0], b[1] - a[1]

    def _at(self, t: float) -> tuple[float, float]:
        for (ta, fa, ra), (tb, fb, rb) in itertools.pairwise(self.samples):
            if ta <= t <= tb:
                w = (t - ta) / (tb - ta) if tb > ta else 0.0
                return fa + w * (fb - fa), ra + w * (rb - ra)
        return self.samples[-1][1:]


def group_cpu_seconds(pgid: int) -> tuple[float, float]:
    """(CPU s of process `pgid`, CPU s of the other live processes in its group), user + system."""
    tick = os.sysconf("SC_CLK_TCK")
    front = rest = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
        if int(fields[2]) != pgid:  # field 5 of stat(5): the process group
            continue
        used = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        if int(entry) == pgid:
            front += used
        else:
            rest += used
    return front, rest

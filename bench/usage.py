"""What a measured server uses, and whether anything else used the machine meanwhile (Linux /proc).

On a machine shared with other people's work, a throughput figure means something only if the
server and its client had the CPUs to themselves. The 1-minute load average cannot tell: after a
16-stream run it still carries that run's own load into the next one. So each measured interval
counts CPU time directly: the machine's busy time (/proc/stat) minus the server's process group
and this process's own children (the load client) and itself; what is left was someone else's.
"""

import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    # cpu  user nice system idle iowait irq softirq steal ...
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICK


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after "pid (comm)" (comm may hold spaces): state ppid pgrp
    ... utime (11) stime (12) ...; OSError once the process has ended."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_s(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _group(pgid: int) -> dict[int, list[str]]:
    """Every live process in group `pgid`, with its stat fields (each read once)."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = _stat(d.name)
        except OSError:  # ended meanwhile
            continue
        if int(fields[2]) == pgid:
            found[int(d.name)] = fields
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (all its threads)."""
    return _cpu_s(_stat(pid))


def group_cpu_seconds(pgid: int) -> tuple[float, float]:
    """(CPU s of process `pgid`, CPU s of the other live processes in its group)."""
    main = rest = 0.0
    for pid, fields in _group(pgid).items():
        if pid == pgid:
            main += _cpu_s(fields)
        else:
            rest += _cpu_s(fields)
    return main, rest


def _group_cpu_s(pgid: int) -> float:
    return sum(group_cpu_seconds(pgid))


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Interval:
    """CPU accounting over one measured interval; `foreign_share` of all CPUs went elsewhere."""

    pgid: int
    t0: float = 0.0
    busy0: float = 0.0
    ours0: float = 0.0
    foreign_share: float | None = None

    def __enter__(self) -> "Interval":
        self.t0, self.busy0 = time.monotonic(), _machine_busy_s()
        self.ours0 = _group_cpu_s(self.pgid) + _own_cpu_s()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.monotonic() - self.t0
        busy = _machine_busy_s() - self.busy0
        ours = _group_cpu_s(self.pgid) + _own_cpu_s() - self.ours0
        self.foreign_share = max(0.0, busy - ours) / (wall * (os.cpu_count() or 1))


def peak_rss_mib(pgid: int) -> dict:
    """The largest peak RSS (VmHWM) in the group (the engine's worker holds the weights) and the
    group's current total RSS, in MiB."""
    peak, total = 0, 0
    for pid in _group(pgid):
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in status if ln.startswith("Vm")}
        peak, total = max(peak, kb.get("VmHWM", 0)), total + kb.get("VmRSS", 0)
    return {"worker_peak_rss_mib": round(peak / 1024), "group_rss_mib": round(total / 1024)}


class CpuSampler:
    """CPU seconds used by a server's processes over time: its main process (the HTTP front
    end, which runs the API) apart from the rest of its process group (the engine's core and
    worker), sampled from /proc every `every` s in a thread while `with`-ed.

    On 2 cores every CPU second the front end spends is taken from the engine, so this is the
    front end's cost under the real engine, where bench/frontend.py measures it with a fake one.
    """

    def __init__(self, pid: int, every: float = 0.25):
        self.pid, self.every = pid, every
        # (time.monotonic(), front s, rest s): CLOCK_MONOTONIC, the clock `vllm bench serve`
        # stamps its requests with (perf_counter), so a level's window needs no translating
        self.samples: list[tuple[float, float, float]] = []
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
            self.samples.append((time.monotonic(), *group_cpu_seconds(self.pid)))
            if self._stop.wait(self.every):
                self.samples.append((time.monotonic(), *group_cpu_seconds(self.pid)))
                return

    def between(self, t0: float, t1: float) -> tuple[float, float] | None:
        """(front, rest) CPU seconds used from monotonic time t0 to t1, interpolated between
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

"""What a measured server uses, and whether anything else used the machine meanwhile (Linux /proc).

On a machine shared with other people's work, a throughput figure means something only if the
server and its client had the CPUs to themselves. The 1-minute load average cannot tell: after a
16-stream run it still carries that run's own load into the next one. So each measured interval
counts CPU time directly: the machine's busy time (/proc/stat) minus the server's process group
and this process's own children (the load client) and itself; what is left was someone else's.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    # cpu  user nice system idle iowait irq softirq steal ...
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICK


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        if int(fields[2]) == pgid:
            pids.append(int(d.name))
    return pids


def _group_cpu_s(pgid: int) -> float:
    total = 0
    for pid in _group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


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
    for pid in _group_pids(pgid):
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in status if ln.startswith("Vm")}
        peak, total = max(peak, kb.get("VmHWM", 0)), total + kb.get("VmRSS", 0)
    return {"worker_peak_rss_mib": round(peak / 1024), "group_rss_mib": round(total / 1024)}

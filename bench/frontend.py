"""What nanoserve's front end costs per request and per streamed token, with an instant engine.

    .venv/bin/python -m bench.frontend [--rounds 3] [--seconds 3] [--profile]   # ~1 min

Three servers, one up at a time, in alternating rounds: the floor (bench/sse_floor.py, a bare
FastAPI route doing the same SSE), and nanoserve's real runner, app and HTTP layer over the tests'
fake engine (tests/support/fake_server.py) with auth, rate limits (requests, tokens and concurrency
per caller) in memory or on a local redis-server, metrics and the JSON access log on. Each serves
two workloads from bench/socket_load.py (a raw-socket client): 16-token JSON completions and
60-token SSE streams, at one connection (latency) and at `--connections` (throughput). Writes
bench/results/frontend.json; a round with a failed request, or started on a busy machine, is
invalid and left out of the medians. `--profile` runs nanoserve under cProfile
(bench/profiled.py) instead and prints its top functions.
"""

import argparse
import json
import os
import pstats
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench import socket_load, validity
from bench.usage import cpu_seconds
from harness.processes import ServerProcess, free_port, redis_server

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

TOKEN = "sk-bench-frontend"
LIMITS = ["--rpm", "100000000", "--tpm", "1000000000", "--concurrency", "100000"]
WORKLOADS = {
    "json": {"model": "fake", "prompt": "abc", "max_tokens": 16},
    "sse": {
        # 3 prompt tokens + 60: within the fake engine's 64-token context
        "model": "fake", "prompt": "abc", "max_tokens": 60, "stream": True,
        "stream_options": {"include_usage": True},
    },
}  # fmt: skip


def server_cmd(name: str, port: int, redis_url: str | None, tree: Path = ROOT) -> list[str]:
    """The command for `name` (nanoserve's code from `tree`: this one, or an older export)."""
    if name == "floor":
        return [sys.executable, "-m", "bench.sse_floor", "--port", str(port)]
    fake = [sys.executable, str(tree / "tests" / "support" / "fake_server.py")]
    args = ["--host", "127.0.0.1", "--port", str(port), "--api-key", TOKEN, *LIMITS]
    if name.endswith("+redis"):
        args += ["--ratelimit-storage", redis_url]
    return fake + args


def measure(
    proc: ServerProcess,
    token: str | None,
    seconds: float,
    connections: int,
    only: str | None = None,
) -> dict:
    """Both workloads (or `only` one), at one connection and at `connections`: requests/s,
    median latency, and the server's CPU time per request (what a busy machine disturbs least);
    and the number of failures."""
    port, pid = proc.port, proc.proc.pid
    out, failed = {}, 0
    for name, body in WORKLOADS.items():
        if only not in (None, name):
            continue
        socket_load.hammer(port, body, 4, 0.3, token)  # warm up (first-request imports, caches)
        for conns in (1, connections):
            cpu = cpu_seconds(pid)
            samples, wall, errors = socket_load.hammer(port, body, conns, seconds, token)
            cpu = cpu_seconds(pid) - cpu
            ok = [s for s in samples if s.status == 200]
            failed += len(samples) - len(ok) + len(errors)
            key = f"{name}_{'one' if conns == 1 else 'many'}"
            out[f"{key}_rps"] = len(ok) / wall
            out[f"{key}_p50_ms"] = 1000 * statistics.median(s.total_s for s in ok) if ok else None
            out[f"{key}_cpu_ms"] = 1000 * cpu / len(ok) if ok else None
            if name == "sse" and ok:  # per token: first token, 59 more, usage, [DONE]
                stream = [(s.total_s - s.first_byte_s) / (s.events - 3) for s in ok]
                out[f"{key}_per_token_us"] = 1e6 * statistics.median(stream)
    out["failed"] = failed
    return out


def one_round(name: str, args, redis_url: str | None) -> dict:
    """Start `name` on a quiet machine, measure it, stop it; its figures and validity."""
    load = quiet_load(args)
    port = free_port()
    tree = args.baseline if name.startswith("baseline") else ROOT
    cmd = server_cmd(name, port, redis_url, tree)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with ServerProcess(cmd, port, args.out / f"{name}.log", env=env, name=name) as proc:
        proc.wait_ready(60)
        figures = measure(proc, None if name == "floor" else TOKEN, args.seconds, args.connections)
    problems = [f"{figures['failed']} requests failed"] if figures["failed"] else []
    if load > args.max_load:
        problems.append(f"load average {load:g} > {args.max_load:g} before the server started")
    return figures | {"load_avg_before": load, "valid": not problems, "problems": problems}


def quiet_load(args) -> float:
    """The 1-minute load average once it is down to --max-load, or after --settle s."""
    deadline = time.monotonic() + args.settle
    while (load := os.getloadavg()[0]) > args.max_load and time.monotonic() < deadline:
        time.sleep(1)
    return round(load, 2)


def summarize(rounds: dict[str, list[dict]]) -> dict:
    """Per server, the median of each figure over its valid rounds, and its cost over the floor."""
    table = {}
    for name, rs in rounds.items():
        good = [r for r in rs if r["valid"]]
        keys = [k for k in rs[0] if k.endswith(("_rps", "_ms", "_us"))]
        table[name] = {k: statistics.median(r[k] for r in good) for k in keys} if good else None
        if table[name]:
            table[name]["valid_rounds"] = f"{len(good)}/{len(rs)}"
    floor = table.get("floor")
    tokens = WORKLOADS["sse"]["max_tokens"]
    for name, row in table.items():
        if name == "floor" or not row or not floor:
            continue
        added = {k: row[k] - floor[k] for k in floor if k != "valid_rounds"}
        row["added_ms_per_json_request"] = added["json_one_p50_ms"]
        row["added_cpu_ms_per_json_request"] = added["json_many_cpu_ms"]
        row["added_us_per_streamed_token"] = added["sse_one_per_token_us"]
        row["added_cpu_us_per_streamed_token"] = 1000 * added["sse_many_cpu_ms"] / tokens
        row["json_rps_vs_floor"] = row["json_many_rps"] / floor["json_many_rps"]
        row["sse_rps_vs_floor"] = row["sse_many_rps"] / floor["sse_many_rps"]
    return table


def profile(args) -> None:
    """nanoserve (limits in memory) under cProfile for both workloads; its top functions."""
    stats = args.out / "nanoserve.prof"
    port = free_port()
    cmd = server_cmd("nanoserve", port, None)
    cmd = [cmd[0], "-m", "bench.profiled", str(stats), *cmd[1:]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with ServerProcess(cmd, port, args.out / "profile.log", env=env, name="profiled") as proc:
        proc.wait_ready(60)
        measure(proc, TOKEN, args.seconds, args.connections, args.profile)
    p = pstats.Stats(str(stats))
    p.sort_stats("tottime").print_stats(30)
    p.sort_stats("cumulative").print_stats(60)


def build_parser() -> argparse.ArgumentParser:
    """The front-end benchmark's command line."""
    ap = argparse.ArgumentParser("python -m bench.frontend", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    ap.add_argument("--connections", type=int, default=32, help="for throughput (default 32)")
    ap.add_argument("--max-load", type=float, default=validity.DEFAULT_MAX_LOAD)
    ap.add_argument("--settle", type=float, default=60, help="s to wait for a quiet machine")
    ap.add_argument("--out", type=Path, default=Path("/tmp/nanoserve-frontend"), help="logs")
    ap.add_argument(
        "--baseline",
        type=Path,
        help="also measure nanoserve from this tree, e.g. `git archive REV server tests nanoserve "
        "convert | tar -x -C DIR` (before/after figures, in the same rounds)",
    )
    ap.add_argument("--json", type=Path, default=BENCH / "results" / "frontend.json")
    ap.add_argument(
        "--profile", choices=list(WORKLOADS), help="cProfile nanoserve on one workload instead"
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.profile:
        profile(args)
        return 0
    assert shutil.which("redis-server"), "redis-server is needed for the Redis-limits server"
    names = ["floor", "nanoserve", "nanoserve+redis"]
    if args.baseline:
        names += ["baseline", "baseline+redis"]
    rounds: dict[str, list[dict]] = {name: [] for name in names}
    with redis_server(args.out) as redis_url:
        for i in range(args.rounds):
            for name in rounds:
                rounds[name].append(one_round(name, args, redis_url))
                r = rounds[name][-1]
                note = "" if r["valid"] else f"  INVALID: {'; '.join(r['problems'])}"
                print(
                    f"round {i} {name:16} json {r['json_many_rps']:6.0f} req/s "
                    f"{r['json_many_cpu_ms']:.2f} ms CPU (c=1 {r['json_one_p50_ms']:.2f} ms)  "
                    f"sse {r['sse_many_rps']:5.0f} req/s {r['sse_many_cpu_ms']:.1f} ms CPU "
                    f"(c=1 {r['sse_one_per_token_us']:.0f} us/token){note}",
                    flush=True,
                )
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "workloads": WORKLOADS,
        "summary": summarize(rounds),
        "rounds": rounds,
    }
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

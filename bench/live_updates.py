"""What a live weight swap costs: `nanoserve serve out/ --watch` while a "training run" rewrites
its checkpoint, under steady load.

    flock /tmp/nanoserve-heavy.lock .venv/bin/python -m bench.live_updates   # ~3 min, demo
    ... -m bench.live_updates --model gpt2-124m                             # ~6 min

Serves a nanoGPT checkpoint (the demo's, or GPT-2-124M's shape with random weights) with
--watch, runs `--clients` clients (greedy completions) for `--steady` seconds, then rewrites
the checkpoint `--swaps` times (each a new iteration: the weights plus a little noise, written
in place as torch.save does) while they go on. Per swap: the time from the file being complete
to the first answer from the new version (--watch-settle included). Overall: latency p50/p99
and throughput during the swaps against steady state, failed requests (any makes the run
invalid), and the server's memory (RSS of its processes) after the first swap and the last.
Writes bench/results/live_updates.json (one entry per model).
"""

import argparse
import io
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import torch

from bench import models as bench_models
from harness.processes import ServerProcess, free_port, nanoserve, server_env

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "live_updates.json"
PROMPTS = {"shakespeare_char": "ROMEO:", "gpt2-124m": "The meaning of life is"}


class Load:
    """Client threads sending completions; each answer is (start, end, ok, version)."""

    def __init__(self, url: str, prompt: str, clients: int, tokens: int):
        self.url, self.prompt, self.tokens = url, prompt, tokens
        self.records: list[tuple[float, float, bool, str | None]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(clients)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def _loop(self) -> None:
        body = {"model": "out", "prompt": self.prompt, "max_tokens": self.tokens}
        with httpx.Client(timeout=120) as client:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    r = client.post(f"{self.url}/v1/completions", json=body | {"temperature": 0})
                    ok, version = r.status_code == 200, r.headers.get("x-model-version")
                except httpx.HTTPError:
                    ok, version = False, None
                self.records.append((start, time.perf_counter(), ok, version))

    def window(self, start: float, end: float) -> dict:
        done = [r for r in self.records if start <= r[1] < end]
        latencies = sorted(r[1] - r[0] for r in done if r[2])
        return {
            "requests": len(done),
            "failed": sum(1 for r in done if not r[2]),
            "p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3) if latencies else None,
            "requests_per_s": round(len(done) / (end - start), 2),
        }

    def first_answer(self, version: str, after: float, timeout: float) -> float | None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            ends = [r[1] for r in list(self.records) if r[3] == version and r[1] > after]
            if ends:
                return min(ends)
            time.sleep(0.02)
        return None


def rss_mb(pid: int) -> float:
    """The resident memory of a process and its children (the engine's), in MB."""
    proc = psutil.Process(pid)
    return round(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 1e6)


def versions(ckpt: dict, n: int) -> list[tuple[int, bytes]]:
    """`n` successive "training" checkpoints: the weights plus a little noise, a later iter.
    Tied tensors (nanoGPT's lm_head is its token embedding) get the same noise: they stay
    one tensor, which the converter checks."""
    out = []
    for i in range(1, n + 1):
        torch.manual_seed(i)
        moved: dict[int, torch.Tensor] = {}  # by storage: a tied pair is moved once
        state = {}
        for k, v in ckpt["model"].items():
            if not v.is_floating_point():
                state[k] = v
                continue
            key = v.untyped_storage().data_ptr()
            if key not in moved:
                moved[key] = v + 1e-3 * torch.randn_like(v)
            state[k] = moved[key]
        buffer = io.BytesIO()
        torch.save(ckpt | {"model": state, "iter_num": ckpt.get("iter_num", 0) + i}, buffer)
        out.append((ckpt.get("iter_num", 0) + i, buffer.getvalue()))
    return out


def source_checkpoint(model: str, work: Path) -> Path:
    """out/ckpt.pt (+ meta.pkl) for `model` under `work`."""
    out = work / "out"
    out.mkdir(parents=True)
    if model == "shakespeare_char":
        demo = bench_models.DEMO_CKPT
        (out / "ckpt.pt").write_bytes(demo.read_bytes())
        (out / "meta.pkl").write_bytes((demo.parent / "meta.pkl").read_bytes())
    else:
        bench_models.build_gpt2(out / "ckpt.pt")
    return out / "ckpt.pt"


def run(args) -> dict:
    load_before = os.getloadavg()[0]  # before this run's own work (the checkpoints below)
    work = Path(tempfile.mkdtemp(prefix="nanoserve-live-"))
    ckpt_path = source_checkpoint(args.model, work)
    new = versions(torch.load(ckpt_path, weights_only=False), args.swaps)
    port = free_port()
    cmd = nanoserve(["out", "--watch", "--watch-settle", str(args.settle), "--no-auth"], port)
    cmd += ["--cache-dir", str(work / "cache"), "--cpu-kvcache-space", "1"]
    record = {"model": args.model, "clients": args.clients, "swaps": args.swaps,
              "settle_s": args.settle, "load_avg_before": load_before}  # fmt: skip
    with ServerProcess(cmd, port, work / "server.log", env=server_env(), cwd=work) as server:
        server.wait_ready(600)
        with Load(server.url, PROMPTS[args.model], args.clients, args.tokens) as load:
            time.sleep(args.warmup)  # the first batches of each size compile: not steady yet
            start = time.perf_counter()
            time.sleep(args.steady)
            record["steady"] = load.window(start, time.perf_counter())
            swaps_start, to_new, rss = time.perf_counter(), [], []
            for iter_num, data in new:
                with open(ckpt_path, "r+b") as f:  # in place, as torch.save does
                    f.truncate(0)
                    f.write(data)
                complete = time.perf_counter()
                version = _wait_version(server.url, iter_num, args.timeout)
                first = load.first_answer(version, complete, args.timeout) if version else None
                to_new.append(round(first - complete, 2) if first else None)
                rss.append(rss_mb(server.proc.pid))
                if first is None:
                    break  # the reload failed (the server's log says why): the run is invalid
                time.sleep(args.gap)
            record["during_swaps"] = load.window(swaps_start, time.perf_counter())
    record |= {
        "to_new_version_s": to_new,
        "to_new_version_p50_s": statistics.median([t for t in to_new if t is not None] or [0]),
        "rss_mb_after_first_swap": rss[0],
        "rss_mb_after_last_swap": rss[-1],
        "reloads_failed": sum(1 for t in to_new if t is None),
    }
    record["invalid"] = _problems(record, args.max_load)
    return record


def _wait_version(url: str, iter_num: int, timeout: float) -> str | None:
    """The id of the version for `iter_num` once it serves; None if its reload failed."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        card = httpx.get(f"{url}/v1/models/out", timeout=10).json()
        if (card.get("version") or "").startswith(f"iter{iter_num}-"):
            return card["version"]
        if card.get("status", "").startswith("failed"):
            print(f"iter {iter_num}: {card['status']}")
            return None
        time.sleep(0.05)
    return None


def _problems(record: dict, max_load: float) -> list[str]:
    found = []
    failed = record["steady"]["failed"] + record["during_swaps"]["failed"]
    if failed:
        found.append(f"{failed} requests failed")
    if record["reloads_failed"]:
        found.append(f"{record['reloads_failed']} swaps never served their version")
    if record["load_avg_before"] > max_load:
        found.append(f"load average {record['load_avg_before']:.2f} > {max_load} before the run")
    return found


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.live_updates", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", choices=bench_models.MODELS, default="shakespeare_char")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--swaps", type=int, default=10)
    p.add_argument("--tokens", type=int, default=32, help="max_tokens of each completion")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of load not measured")
    p.add_argument("--steady", type=float, default=20.0, help="seconds of load before swaps")
    p.add_argument("--gap", type=float, default=3.0, help="seconds between swaps")
    p.add_argument("--settle", type=float, default=2.0, help="the server's --watch-settle")
    p.add_argument("--timeout", type=float, default=180.0, help="longest wait for one swap")
    p.add_argument("--max-load", type=float, default=1.0, help="load average before the run")
    args = p.parse_args()
    # `timeout` or a CI runner's SIGTERM: unwind, so the server and its engine are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    record = run(args)
    print(json.dumps(record, indent=2))
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[args.model] = record
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    if record["invalid"]:
        print("INVALID:", "; ".join(record["invalid"]))


if __name__ == "__main__":
    main()

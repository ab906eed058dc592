"""Benchmark nanoserve against vLLM's own server and the seed's naive servers; one command.

    .venv/bin/python -m bench.run                               # full: ~75 min on 2 cores
    .venv/bin/python -m bench.run --smoke --out /tmp/bench-smoke  # CI: 1-3 min (engine start)

For each model (bench/models.py), nanoserve and vLLM's server run in alternating pairs
(nanoserve, vLLM, nanoserve, ...; `--pairs`), the baselines (`--repeats`) between pairs; one
server is up at a time: started on 127.0.0.1, driven by `vllm bench serve` at every load level of
bench/plan.py, stopped by PID. Before each start the run waits for the machine to quiet down
(`--max-load`, `--settle`); a server started on a busy machine, or a level with a failed request,
is invalid (bench/validity.py) and kept out of the tables. Writes OUT/results.json, OUT/results.md
and OUT/*.png (bench/report.py); logs and the client's own result files go to OUT/raw/.
"""

import argparse
import contextlib
import json
import os
import platform
import secrets
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from bench import models, plan, report, validity, vllm_bench_load
from bench.servers import ENGINES, LABELS, READY_PATH, EngineSettings, base_env, command
from bench.usage import CpuSampler
from harness.processes import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = {"engine": 600.0, "naive": 180.0}  # s; a cold engine start here takes 30-100 s


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    ap = argparse.ArgumentParser("python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny CI run: demo model, nanoserve+naive")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results dir")
    ap.add_argument(
        "--pairs", type=int, help="alternating nanoserve/vLLM pairs per model (default 5; smoke 1)"
    )
    ap.add_argument(
        "--repeats", type=int, help="runs of each baseline (naive, HF) (default 3; smoke 1)"
    )
    ap.add_argument("--models", help=f"comma-separated subset of {','.join(models.MODELS)}")
    ap.add_argument(
        "--servers",
        help=f"comma-separated subset of {','.join(LABELS)} (default: all; smoke: nanoserve,naive)",
    )
    ap.add_argument(
        "--append",
        action="store_true",
        help="add this run's records to OUT/results.json instead of replacing it (e.g. the "
        "baselines, measured after the pairs)",
    )
    ap.add_argument("--demo-ckpt", type=Path, default=models.DEMO_CKPT, help="demo checkpoint")
    ap.add_argument("--kv-cache-gib", type=int, default=2, help="VLLM_CPU_KVCACHE_SPACE")
    ap.add_argument(
        "--max-load",
        type=float,
        default=validity.DEFAULT_MAX_LOAD,
        help="1-min load average above which a server's runs are invalid (default %(default)s)",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=120,
        help="s to wait for the load to reach --max-load before each server (default %(default)s)",
    )
    return ap


def machine() -> dict:
    """Where and with what this run happened."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models_ = [ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")]
    cpu = models_[0] if models_ else platform.processor()
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("vllm-cpu", "torch", "transformers", "fastapi")},
        "git": commit.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else ""),
    }


def appended(results: Path, new: dict) -> dict:
    """`new`'s records added to an earlier run's `results`: that run's header (date, command,
    pairs) stays, and `new` is listed under "appended" with its own date, command and commit, so
    the report says when each record was measured."""
    old = json.loads(results.read_text())
    if [c["model"] for c in old["cases"]] != [c["model"] for c in new["cases"]]:
        sys.exit(f"bench.run --append: {results} measured other models; use the same --models")
    old["runs"] += new["runs"]
    old["server_commands"] |= new["server_commands"]
    later = {k: new[k] for k in ("date", "command", "wall_s")} | {"git": new["machine"]["git"]}
    old.setdefault("appended", []).append(later)
    return old


def settle(max_load: float, wait: float) -> float:
    """Wait up to `wait` s for the 1-minute load average to fall to `max_load` (the previous
    server's run leaves it high for a minute or so); the load average then."""
    deadline = time.monotonic() + wait
    while (load := os.getloadavg()[0]) > max_load and time.monotonic() < deadline:
        time.sleep(2)
    return round(load, 2)


def drive(proc: ServerProcess, case: plan.Case, model_dir: Path, repeat: int, ctx: dict) -> dict:
    """Wait until `proc` is ready, then run the client over all its levels; facts about the run,
    per level None or why the client failed it, and (for the two engine servers, whose main
    process is the HTTP front end alone) the CPU their processes used meanwhile."""
    kind = "engine" if proc.name in ENGINES else "naive"
    try:
        ready_s = proc.wait_ready(READY_TIMEOUT[kind], READY_PATH[proc.name])
    except RuntimeError as e:  # its message carries the log's tail
        print(f"  {e}", file=sys.stderr, flush=True)
        return {"ready_s": None, "problems": [str(e)[-500:]] * len(ctx["levels"])}
    url = f"http://127.0.0.1:{proc.port}"
    io_len = (case.input_len, case.output_len)
    jobs = [
        (
            vllm_bench_load.bench_argv(url, model_dir, io_len, lv, repeat, res),
            plan.level_timeout(case, proc.name, lv),
        )
        for lv, res in ctx["levels"]
    ]
    log = proc.log_path.with_name("client.log")
    cpu = CpuSampler(proc.proc.pid) if proc.name in ENGINES else None
    with cpu or contextlib.nullcontext():
        problems = vllm_bench_load.run_client(jobs, ctx["api_key"], log)
    for (lv, _), problem in zip(ctx["levels"], problems, strict=True):
        if problem:  # the record keeps it too: raw/ is not kept, results.json is
            print(f"  c={lv.concurrency}: {problem}", file=sys.stderr, flush=True)
    example = shlex.join([".venv/bin/python", "-m", "bench.vllm_cli", *jobs[-1][0]])
    ctx["client_example"] = f"OPENAI_API_KEY=$API_KEY {example}"
    return {"ready_s": round(ready_s, 1), "problems": problems, "cpu": cpu}


def run_instance(case: plan.Case, server: str, model_dir: Path, repeat: int, ctx: dict) -> list:
    """Start `server` on a quiet machine, run every level of `case` against it, stop it; one
    record per level."""
    raw: Path = ctx["raw"] / case.model / f"r{repeat}" / server
    raw.mkdir(parents=True, exist_ok=True)
    port, key = free_port(), ctx["api_key"]
    cmd = command(server, model_dir, port, key, ctx["engine"][case.model])
    ctx["commands"][f"{case.model} {server}"] = shlex.join(cmd).replace(key, "$API_KEY")
    ctx["levels"] = [(lv, raw / f"c{lv.concurrency}.json") for lv in case.levels[server]]
    for _, res in ctx["levels"]:
        res.unlink(missing_ok=True)  # a stale file must not pass for this run's result
    load_before = settle(ctx["max_load"], ctx["settle"])
    print(f"[{case.model} r{repeat}] {server}: starting (load {load_before})", flush=True)
    with ServerProcess(cmd, port, raw / "server.log", env=ctx["env"], name=server) as proc:
        facts = drive(proc, case, model_dir, repeat, ctx)
    facts |= {"load_avg_before": load_before, "load_avg_after": round(os.getloadavg()[0], 2)}
    records, cpu = [], facts.pop("cpu", None)  # None: the server never got to the client
    for (lv, res), problem in zip(ctx["levels"], facts.pop("problems"), strict=True):
        rec = {"model": case.model, "server": server, "repeat": repeat}
        rec |= {"concurrency": lv.concurrency, "prompts": lv.prompts, "warmups": lv.warmups}
        rec |= vllm_bench_load.read_result(res, lv, problem) | facts | cpu_use(cpu, res)
        validity.mark([rec], ctx["max_load"])
        tput = rec["output_throughput"] or 0
        note = "" if rec["valid"] else f"  INVALID: {rec['invalid_reason']}"
        print(
            f"  c={lv.concurrency:<3} {tput:9.1f} tok/s  errors {rec['errors']}{note}", flush=True
        )
        records.append(rec)
    return records


def cpu_use(cpu: CpuSampler | None, result: Path) -> dict:
    """CPU seconds the server's front end (its main process) and its engine processes used
    during one level's measured requests, and the front end's per generated token. The window
    runs from the first request's start to the last one's end, as the client stamped them
    (`--save-detailed`: start_times and latencies, on the monotonic clock the sampler reads).
    Not the result file's mtime: that is stamped after the client's own bookkeeping, by the
    file system's clock, and in CI it placed a 0.5 s level's window where the front end had
    used no CPU at all (0.0 s, against ~0.1 s here)."""
    if cpu is None or not result.is_file():
        return {}
    r = json.loads(result.read_text())
    starts, latencies = r.get("start_times"), r.get("latencies")
    if not starts or not r["total_output_tokens"]:
        return {}
    end = max(s + lat for s, lat in zip(starts, latencies, strict=True))
    used = cpu.between(min(starts), end)
    if used is None:
        return {}
    front, engine = used
    return {
        "front_cpu_s": round(front, 3),
        "engine_cpu_s": round(engine, 2),
        "front_cpu_ms_per_token": round(1000 * front / r["total_output_tokens"], 4),
    }


def order(servers: list[str], pairs: int, repeats: int) -> list[tuple[str, int]]:
    """(server, run index) in the order they run: nanoserve and vLLM's server alternate, pair
    by pair, and the baselines take their turns between pairs, so a slow phase of a shared
    machine hits every server alike."""
    seq = []
    for r in range(max(pairs, repeats)):
        if r < pairs:
            seq += [(s, r) for s in ENGINES if s in servers]
        if r < repeats:
            seq += [(s, r) for s in servers if s not in ENGINES]
    return seq


def sweep(cases: tuple, dirs: dict, wanted: list[str], ctx: dict) -> list:
    """Every model x run x server instance, in `order`."""
    runs = []
    for case in cases:
        servers = [s for s in LABELS if s in case.levels and s in wanted]
        for server, r in order(servers, ctx["pairs"], ctx["repeats"]):
            runs += run_instance(case, server, dirs[case.model], r, ctx)
    return runs


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cases = plan.SMOKE if args.smoke else plan.FULL
    if args.models:
        cases = tuple(c for c in cases if c.model in args.models.split(","))
    default = plan.SMOKE_SERVERS if args.smoke else LABELS
    wanted = args.servers.split(",") if args.servers else list(default)
    repeats = args.repeats or (1 if args.smoke else 3)
    pairs = args.pairs or (1 if args.smoke else 5)
    raw, t0 = args.out / "raw", time.monotonic()
    info = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": shlex.join([".venv/bin/python", "-m", "bench.run", *sys.argv[1:]]),
        "smoke": args.smoke,
        "pairs": pairs,
        "repeats": repeats,
        "max_load": args.max_load,
    }
    try:
        dirs = {c.model: models.prepare(c.model, raw / "models", args.demo_ckpt) for c in cases}
    except (FileNotFoundError, RuntimeError) as e:
        sys.exit(f"bench.run: {e}")
    engine = {
        c.model: EngineSettings(
            max_model_len=models.max_model_len(dirs[c.model]),
            max_num_seqs=max(64, plan.max_concurrency(c)),  # nothing waits in the engine's queue
        )
        for c in cases
    }
    ctx = {"raw": raw, "api_key": secrets.token_urlsafe(24), "engine": engine, "commands": {}}
    ctx |= {"env": base_env(args.kv_cache_gib), "pairs": pairs, "repeats": repeats}
    ctx |= {"max_load": args.max_load, "settle": args.settle}
    info["runs"] = sweep(cases, dirs, wanted, ctx)
    info |= {
        "wall_s": round(time.monotonic() - t0),
        "engine_settings": {
            m: vars(e) | {"kv_cache_gib": args.kv_cache_gib} for m, e in engine.items()
        },
        "server_commands": ctx["commands"],
        "client_command_example": ctx.get("client_example"),
        "cases": [report.case_json(c) for c in cases],
    }
    if args.append:
        info = appended(args.out / "results.json", info)
    report.write(args.out, info)
    print(f"wrote {args.out / 'results.md'} in {info['wall_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

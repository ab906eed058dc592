"""Benchmark nanoserve against vLLM's own server and the seed's naive servers; one command.

    .venv/bin/python bench/run.py                               # full: ~40 min on 2 cores
    .venv/bin/python bench/run.py --smoke --out /tmp/bench-smoke  # CI: 1-3 min (engine start)

For each model (bench/models.py) and repeat, each server (bench/servers.py) is started on
127.0.0.1, driven by `vllm bench serve` at every load level of bench/plan.py, and stopped by PID.
Servers take turns in a rotating order, so slow phases of a shared machine hit them alike.
Writes OUT/results.json, OUT/results.md and OUT/*.png (bench/report.py); logs and the client's
own result files go to OUT/raw/ (git-ignored).
"""

import argparse
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

import load
import models
import plan
import report
from procs import ServerProcess, free_port
from servers import ENGINES, LABELS, READY_PATH, EngineSettings, base_env, command

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = {"engine": 600.0, "naive": 180.0}  # s; a cold engine start here takes 30-100 s


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny CI run: demo model, nanoserve+naive")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results dir")
    ap.add_argument("--repeats", type=int, help="runs per server and level (default 3; smoke 1)")
    ap.add_argument("--models", help=f"comma-separated subset of {','.join(models.MODELS)}")
    ap.add_argument(
        "--servers",
        help=f"comma-separated subset of {','.join(LABELS)} (default: all; smoke: nanoserve,naive)",
    )
    ap.add_argument("--demo-ckpt", type=Path, default=models.DEMO_CKPT, help="demo checkpoint")
    ap.add_argument("--kv-cache-gib", type=int, default=2, help="VLLM_CPU_KVCACHE_SPACE")
    ap.add_argument("--client-timeout", type=float, default=1800, help="s per server instance")
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


def drive(proc: ServerProcess, case: plan.Case, model_dir: Path, repeat: int, ctx: dict) -> dict:
    """Wait until `proc` is ready, then run the client over all its levels; facts about the run."""
    kind = "engine" if proc.name in ENGINES else "naive"
    try:
        ready_s = proc.wait_ready(READY_TIMEOUT[kind], READY_PATH[proc.name])
    except RuntimeError as e:  # its message carries the log's tail
        print(f"  {e}", file=sys.stderr, flush=True)
        return {"ready_s": None}
    facts = {"ready_s": round(ready_s, 1), "load_avg_before": round(os.getloadavg()[0], 2)}
    url = f"http://127.0.0.1:{proc.port}"
    io_len = (case.input_len, case.output_len)
    argvs = [load.bench_argv(url, model_dir, io_len, lv, repeat, res) for lv, res in ctx["levels"]]
    log = proc.log_path.with_name("client.log")
    code = load.run_client(argvs, ctx["api_key"], log, ctx["client_timeout"])
    if code != 0:  # a client that died (a signal, a timeout) leaves no result files: say why
        print(f"  load client exited with {code}; see {log}", file=sys.stderr, flush=True)
    example = shlex.join([".venv/bin/python", "bench/vllm_cli.py", *argvs[-1]])
    ctx["client_example"] = f"OPENAI_API_KEY=$API_KEY {example}"
    return facts


def run_instance(case: plan.Case, server: str, model_dir: Path, repeat: int, ctx: dict) -> list:
    """Start `server`, run every level of `case` against it, stop it; one record per level."""
    raw: Path = ctx["raw"] / case.model / f"r{repeat}" / server
    raw.mkdir(parents=True, exist_ok=True)
    port, key = free_port(), ctx["api_key"]
    cmd = command(server, model_dir, port, key, ctx["engine"][case.model])
    ctx["commands"][f"{case.model} {server}"] = shlex.join(cmd).replace(key, "$API_KEY")
    ctx["levels"] = [(lv, raw / f"c{lv.concurrency}.json") for lv in case.levels[server]]
    for _, res in ctx["levels"]:
        res.unlink(missing_ok=True)  # a stale file must not pass for this run's result
    print(f"[{case.model} r{repeat}] {server}: starting", flush=True)
    with ServerProcess(cmd, port, raw / "server.log", env=ctx["env"], name=server) as proc:
        facts = drive(proc, case, model_dir, repeat, ctx)
    records = []
    for lv, res in ctx["levels"]:
        rec = {"model": case.model, "server": server, "repeat": repeat}
        rec |= {"concurrency": lv.concurrency, "prompts": lv.prompts, "warmups": lv.warmups}
        rec |= load.read_result(res, lv) | facts
        tput = rec["output_throughput"] or 0
        print(f"  c={lv.concurrency:<3} {tput:9.1f} tok/s  errors {rec['errors']}", flush=True)
        records.append(rec)
    return records


def sweep(cases: tuple, dirs: dict, wanted: list[str], repeats: int, ctx: dict) -> list:
    """Every model x repeat x server instance, servers in an order that rotates per repeat."""
    runs = []
    for case in cases:
        servers = [s for s in case.levels if s in wanted]
        if not servers:
            continue
        for r in range(repeats):
            for server in servers[r % len(servers) :] + servers[: r % len(servers)]:
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
    raw, t0 = args.out / "raw", time.monotonic()
    info = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": shlex.join([".venv/bin/python", "bench/run.py", *sys.argv[1:]]),
        "smoke": args.smoke,
        "repeats": repeats,
    }
    try:
        dirs = {c.model: models.prepare(c.model, raw / "models", args.demo_ckpt) for c in cases}
    except (FileNotFoundError, RuntimeError) as e:
        sys.exit(f"bench/run.py: {e}")
    engine = {m: EngineSettings(max_model_len=models.max_model_len(d)) for m, d in dirs.items()}
    ctx = {"raw": raw, "api_key": secrets.token_urlsafe(24), "engine": engine, "commands": {}}
    ctx |= {"env": base_env(args.kv_cache_gib), "client_timeout": args.client_timeout}
    info["runs"] = sweep(cases, dirs, wanted, repeats, ctx)
    info |= {
        "wall_s": round(time.monotonic() - t0),
        "engine_settings": {
            m: vars(e) | {"kv_cache_gib": args.kv_cache_gib} for m, e in engine.items()
        },
        "server_commands": ctx["commands"],
        "client_command_example": ctx.get("client_example"),
        "cases": [report.case_json(c) for c in cases],
    }
    report.write(args.out, info)
    print(f"wrote {args.out / 'results.md'} in {info['wall_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

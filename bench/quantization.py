"""Quantization on CPU: quality, speed and memory of float32, bfloat16 and int8, in one command.

    flock /tmp/nanoserve-heavy.lock .venv/bin/python -m bench.quantization   # ~20 min, 2 cores

For each model of bench/models.py (the trained demo; the 124M shape with random weights) and each
variant below, one nanoserve server is started on 127.0.0.1 and measured, then stopped by PID:
quality through the server (bench/quality.py), throughput at 1 and 16 concurrent streams with
the benchmark's load client (`vllm bench serve`, bench/vllm_bench_load.py), and memory
(bench/usage.py).
A speed figure counts only if no request failed and other processes used less than BUSY of the
CPUs meanwhile; otherwise the run is marked invalid and no ratio is computed from it (a level
made invalid only by others' load is tried again, RETRIES times at most, 30 s apart).
Writes OUT/quantization-MODEL.json and .md per model; logs go to OUT/raw/quantization/.
"""

import argparse
import os
import secrets
import shlex
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from safetensors import safe_open

from bench import models, quality, quant_report, usage, vllm_bench_load
from bench.run import machine
from bench.servers import EngineSettings, base_env, command
from bench.vllm_bench_load import Level
from harness.processes import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
BUSY = 0.15  # share of all CPUs other processes may use during a valid speed run
RETRIES, RETRY_WAIT_S = 2, 30  # a level invalid only for others' load is tried again

# variant: (nanoserve convert --quantize, nanoserve serve --dtype)
VARIANTS = {
    "float32": (None, "float32"),
    "bfloat16": (None, "bfloat16"),
    "int8": ("int8", "float32"),
    "int8 + bfloat16": ("int8", "bfloat16"),
}


@dataclass(frozen=True)
class Plan:
    """One model's measurement: held-out text, greedy prompts, and the load levels."""

    heldout_chars: int  # characters of the held-out text scored
    window: int  # tokens per scoring request (the model's context)
    prompts: int  # greedy continuations, each from `prompt_len` held-out tokens
    prompt_len: int
    new_tokens: int
    io_len: tuple[int, int]  # load client's prompt and output lengths
    levels: tuple[Level, ...]


PLANS = {
    "shakespeare_char": Plan(16384, 128, 8, 32, 96, (32, 64), (Level(1, 16, 1), Level(16, 128, 8))),
    "gpt2-124m": Plan(16384, 1024, 8, 32, 96, (64, 64), (Level(1, 8, 1), Level(16, 32, 8))),
}


def weights_mib(model_dir: Path, dtype: str) -> float:
    """Bytes the engine holds for the weights: floats in the serving dtype, int8 as int8, the
    int8 scales in float32 (as vLLM allocates them)."""
    size = {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]
    total = 0
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        for name in f.keys():  # noqa: SIM118 (safe_open is no dict)
            t = f.get_slice(name)
            n = 1
            for d in t.get_shape():
                n *= d
            kind = t.get_dtype()
            total += n * (1 if kind == "I8" else 4 if name.endswith("weight_scale") else size)
    return round(total / 2**20, 1)


def measure_quality(client: quality.Client, plan: Plan) -> dict:
    ids = client.tokenize(quality.heldout_text(plan.heldout_chars))
    scored = quality.score(client, ids, plan.window)
    stride = len(ids) // plan.prompts
    prompts = [ids[k * stride : k * stride + plan.prompt_len] for k in range(plan.prompts)]
    loss = statistics.fmean(scored["nll"])
    return {
        "heldout_tokens": len(scored["nll"]),
        "loss": loss,
        "perplexity": 2.718281828459045**loss,
        "top1": scored["top1"],
        "greedy": quality.greedy(client, prompts, plan.new_tokens),
    }


def run_level(proc: ServerProcess, model_dir: Path, plan: Plan, lv: Level, ctx: dict) -> dict:
    """One load level against `proc`: its figures, the load before it and others' CPU share."""
    result = proc.log_path.with_name(f"c{lv.concurrency}.json")
    result.unlink(missing_ok=True)
    argv = vllm_bench_load.bench_argv(proc.url, model_dir, plan.io_len, lv, 0, result)
    ctx["client_example"] = shlex.join([".venv/bin/python", "-m", "bench.vllm_cli", *argv])
    load_avg = round(os.getloadavg()[0], 2)
    with usage.Interval(proc.proc.pid) as iv:
        (problem,) = vllm_bench_load.run_client(
            [(argv, 1800)], ctx["api_key"], result.with_suffix(".log")
        )
    r = vllm_bench_load.read_result(result, lv, problem)
    busy = round(iv.foreign_share, 3)
    valid = r["errors"] == 0 and busy <= BUSY
    tput = r["output_throughput"] or 0
    print(
        f"    c={lv.concurrency:<3} {tput:8.1f} tok/s  errors {r['errors']}  load {load_avg}"
        f"  others {busy:.0%} of CPUs{'' if valid else '  INVALID'}",
        flush=True,
    )
    return (
        {"concurrency": lv.concurrency, "prompts": lv.prompts, "load_avg_1m_before": load_avg}
        | {"foreign_cpu_share": busy, "valid": valid, "errors": r["errors"]}
        | {k: r.get(k) for k in ("output_throughput", "p50_ttft_ms", "p50_tpot_ms")}
    )


def measure_speed(proc: ServerProcess, model_dir: Path, plan: Plan, ctx: dict) -> list[dict]:
    """Every level; one that others' work made invalid is tried again, RETRIES times at most
    (the attempts are all recorded)."""
    runs = []
    for lv in plan.levels:
        attempts = [run_level(proc, model_dir, plan, lv, ctx)]
        while not attempts[-1]["valid"] and not attempts[-1]["errors"] and len(attempts) <= RETRIES:
            time.sleep(RETRY_WAIT_S)
            attempts.append(run_level(proc, model_dir, plan, lv, ctx))
        runs.append(attempts[-1] | {"attempts": attempts[:-1]})
    return runs


def measure(model: str, variant: str, model_dir: Path, ctx: dict) -> dict:
    """Start one server, measure it, stop it."""
    plan, dtype = PLANS[model], VARIANTS[variant][1]
    raw = ctx["raw"] / model / variant.replace(" + ", "-")
    raw.mkdir(parents=True, exist_ok=True)
    port, key = free_port(), ctx["api_key"]
    eng = EngineSettings(max_model_len=models.max_model_len(model_dir), dtype=dtype)
    cmd = command("nanoserve", model_dir, port, key, eng)
    ctx["commands"][f"{model} {variant}"] = shlex.join(cmd).replace(key, "$API_KEY")
    print(f"[{model}] {variant}: starting ({model_dir.name}, --dtype {dtype})", flush=True)
    rec: dict = {"model": model, "variant": variant, "dir": model_dir.name, "dtype": dtype}
    with ServerProcess(cmd, port, raw / "server.log", env=ctx["env"], name="nanoserve") as proc:
        try:
            rec["ready_s"] = round(proc.wait_ready(900), 1)
        except RuntimeError as e:  # its message ends with the log's tail
            print(f"    did not start: {e}", flush=True)
            return rec | {"failed": str(e).splitlines()[0]}
        rec |= measure_quality(quality.Client(proc.url, model_dir.name, key), plan)
        print(
            f"    held-out loss {rec['loss']:.4f} over {rec['heldout_tokens']} tokens", flush=True
        )
        rec["speed"] = measure_speed(proc, model_dir, plan, ctx)
        rec |= usage.peak_rss_mib(proc.proc.pid)
    rec["weights_mib"] = weights_mib(model_dir, dtype)
    return rec


def compare(records: list[dict]) -> None:
    """Each variant against float32 of the same model: quality always, speed when both valid."""
    ref = records[0]  # float32 runs first
    for rec in records:
        if "failed" in rec or "failed" in ref:
            continue
        rec["loss_delta"] = rec["loss"] - ref["loss"]
        rec["top1_agreement"] = quality.agreement(rec["top1"], ref["top1"])
        rec["greedy_agreement"] = quality.greedy_agreement(rec["greedy"], ref["greedy"])
        for mine, theirs in zip(rec["speed"], ref["speed"], strict=True):
            both = mine["valid"] and theirs["valid"]
            ok = both and mine["output_throughput"] and theirs["output_throughput"]
            mine["vs_float32"] = (
                mine["output_throughput"] / theirs["output_throughput"] if ok else None
            )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        "python -m bench.quantization", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results dir")
    ap.add_argument("--models", default=",".join(PLANS), help="comma-separated subset")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    ap.add_argument("--kv-cache-gib", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE")
    return ap


def main(argv: list[str] | None = None) -> int:
    # a SIGTERM (e.g. from `timeout`) must unwind through `with ServerProcess`, which stops the
    # server by its PID; Python's default would leave it running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = build_parser().parse_args(argv)
    variants = ["float32", *(v for v in args.variants.split(",") if v != "float32")]
    raw = args.out / "raw" / "quantization"
    ctx = {"raw": raw, "api_key": secrets.token_urlsafe(24), "commands": {}}
    ctx["env"] = base_env(args.kv_cache_gib)
    info = {
        "machine": machine(),
        "command": shlex.join([".venv/bin/python", "-m", "bench.quantization", *sys.argv[1:]]),
        "busy_threshold": BUSY,
        "plans": {m: vars(p) | {"levels": [vars(lv) for lv in p.levels]} for m, p in PLANS.items()},
    }
    for model in args.models.split(","):
        dirs = {q: models.prepare(model, raw / "models", quantize=q) for q in (None, "int8")}
        t1, info["date"] = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
        records = [measure(model, v, dirs[VARIANTS[v][0]], ctx) for v in variants]
        compare(records)
        info |= {"model": model, "records": records, "server_commands": ctx["commands"]}
        info |= {"client_command_example": ctx["client_example"]}
        info["wall_s"] = round(time.monotonic() - t1)
        path = quant_report.write(args.out, info)
        print(f"wrote {path} in {info['wall_s']} s", flush=True)
        ctx["commands"] = {}
    return 0


if __name__ == "__main__":
    sys.exit(main())

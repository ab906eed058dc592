"""The load: vLLM's own `vllm bench serve` (via bench/vllm_cli.py), one run per concurrency level.

Fixed prompt and output lengths (`--dataset-name random`, `--ignore-eos`), a bounded number of
prompts, streaming `/v1/completions` (the openai backend always streams, with usage), bearer
token from OPENAI_API_KEY. All levels for one server instance run in one client process.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what the report keeps from each `vllm bench serve` result file
METRICS = ("output_throughput", "request_throughput", "p50_ttft_ms", "p95_ttft_ms", "p50_tpot_ms")


@dataclass(frozen=True)
class Level:
    """One `vllm bench serve` run: this many requests in flight, this many in all."""

    concurrency: int
    prompts: int
    warmups: int = 0  # requests sent before measuring (same prompt; fills the batch once)


def _flags(options: dict[str, object]) -> list[str]:
    """{"--name": value} -> ["--name", "value", ...]; a value of True is a bare switch."""
    out: list[str] = []
    for name, value in options.items():
        out += [name] if value is True else [name, str(value)]
    return out


def bench_argv(
    url: str, model_dir: Path, io_len: tuple[int, int], level: Level, seed: int, result: Path
) -> list[str]:
    """`vllm bench serve` arguments for one level; results go to the `result` JSON file."""
    options = {
        "--backend": "openai",
        "--base-url": url,
        "--endpoint": "/v1/completions",
        "--model": model_dir.name,
        "--tokenizer": model_dir,
        "--dataset-name": "random",
        "--random-input-len": io_len[0],
        "--random-output-len": io_len[1],
        "--ignore-eos": True,
        "--seed": seed,
        "--max-concurrency": level.concurrency,
        "--num-prompts": level.prompts,
        "--num-warmups": level.warmups,
        "--percentile-metrics": "ttft,tpot,itl,e2el",
        "--metric-percentiles": "50,95",
        "--save-result": True,
        "--save-detailed": True,  # keeps the per-request errors, which the report counts
        "--result-dir": result.parent,
        "--result-filename": result.name,
        "--disable-tqdm": True,
        # the server answered its readiness probe already: a first request that fails for a
        # minute means a broken server, not a slow start (the default retries for 10 minutes)
        "--ready-check-timeout-sec": 60,
    }
    return ["bench", "serve", *_flags(options)]


def run_client(jobs: list[tuple[list[str], float]], api_key: str, log_path: Path) -> list:
    """Run (argv, timeout s) jobs in one client process; for each, None or why it failed."""
    spec = log_path.with_suffix(".args.json")
    spec.write_text(json.dumps([{"argv": a, "timeout": t} for a, t in jobs], indent=1))
    status = spec.with_suffix(".status.json")
    status.unlink(missing_ok=True)
    env = {**os.environ, "OPENAI_API_KEY": api_key, "VLLM_NO_USAGE_STATS": "1"}
    env["PYTHONPATH"] = str(ROOT)  # `-m bench.vllm_cli` from any working directory
    cmd = [sys.executable, "-m", "bench.vllm_cli", "--each", str(spec)]
    deadline = 120 + sum(t for _, t in jobs)  # each level bounds itself; this is the backstop
    with log_path.open("wb") as log:
        try:
            code = subprocess.run(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=deadline
            ).returncode
        except subprocess.TimeoutExpired:  # run() has killed the client by its PID
            code = -9
    done = json.loads(status.read_text()) if status.is_file() else []
    gone = f"client exited with {code} before this level ran; see {log_path}"
    return done + [gone] * (len(jobs) - len(done))


def read_result(path: Path, level: Level, problem: str | None = None) -> dict:
    """The figures the report uses from one result file; a missing file counts as all failed,
    with `problem` (the client's reason) as the error sample."""
    if not path.is_file():
        empty = dict.fromkeys(METRICS)
        why = problem or "no result file"
        return empty | {"completed": 0, "errors": level.prompts, "error_sample": why}
    r = json.loads(path.read_text())
    sample = next((e for e in r.get("errors", []) if e), "")
    return {m: r.get(m) for m in METRICS} | {
        "completed": r["completed"],
        "errors": level.prompts - r["completed"],
        "error_sample": sample[-500:],
        "duration_s": r["duration"],
        "output_tokens": r["total_output_tokens"],
    }

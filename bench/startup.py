"""Where nanoserve's start-up time goes, on a first (cold) start and a second (warm) one.

    flock /tmp/nanoserve-heavy.lock .venv/bin/python -m bench.startup   # ~2 min on 2 cores

Starts `python -m nanoserve.server examples/shakespeare_char --no-auth --cpu-kvcache-space 1`
twice with the same, initially empty, cache directories (nanoserve's converted checkpoints, vLLM's
VLLM_CACHE_ROOT with its torch.compile cache, inductor's TORCHINDUCTOR_CACHE_DIR): the first
start fills them, the second reads them. Each phase is read off the JSON log's timestamps
(PHASES) and /ready is polled for the end. `--enforce-eager` adds a pair without compilation.
Writes bench/results/startup.json.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from harness.processes import ServerProcess, free_port, nanoserve, server_env

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

# (phase, a substring of the log line that ends it), in the order they happen. A phase runs from
# the end of the one before (the first from the process's start) to its own line.
PHASES = (
    ("python, nanoserve and vLLM imports (+ checkpoint conversion when cold)", "loading model"),
    ("engine config in the API process", "Resolved architecture"),
    ("engine core process started (imports vLLM again)", "Initializing a V1 LLM engine"),
    ("worker process started (imports vLLM again)", "Starting to load model"),
    ("weights loaded", "Loading weights took"),
    ("compile warm-up: Dynamo + inductor, or its cache", "Warming up done."),
    ("KV cache, warm-up runs", "init engine (profile, create kv cache, warmup model) took"),
    ("nanoserve ready", "ready: serving"),
)


def _lines(log: Path) -> list[tuple[float, str]]:
    """(unix time, message) of every JSON line of the log."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
            at = datetime.strptime(rec["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except (ValueError, KeyError):
            continue
        out.append((at, str(rec.get("message", ""))))
    return out


def phases(log: Path, started: float) -> dict[str, float | None]:
    """Seconds per phase (None when its line never came: e.g. no compile with --enforce-eager)."""
    lines, out, prev = _lines(log), {}, started
    for name, marker in PHASES:
        at = next((t for t, msg in lines if marker in msg and t >= prev), None)
        out[name] = None if at is None else round(at - prev, 1)
        prev = at if at is not None else prev
    return out


def start_once(label: str, caches: Path, out: Path, eager: bool, env_extra: dict) -> dict:
    """Start the demo server with `caches`, time it to /ready, stop it; its phases."""
    port = free_port()
    cmd = nanoserve(["examples/shakespeare_char", "--no-auth", "--cpu-kvcache-space", "1"], port)
    cmd += ["--cache-dir", str(caches / "nanoserve"), "--log-format", "json"]
    cmd += ["--enforce-eager"] if eager else []
    env = server_env(
        VLLM_CACHE_ROOT=str(caches / "vllm"),
        TORCHINDUCTOR_CACHE_DIR=str(caches / "inductor"),
        **env_extra,
    )
    load = round(os.getloadavg()[0], 2)
    started = time.time()
    log = out / f"{label}.log"
    with ServerProcess(cmd, port, log, env=env, name=label) as proc:
        ready_s = proc.wait_ready(600)
    result = {"ready_s": round(ready_s, 1), "load_avg_before": load, "phases": phases(log, started)}
    print(f"{label:12} ready in {ready_s:5.1f} s  {result['phases']}", flush=True)
    return result


def build_parser() -> argparse.ArgumentParser:
    """The start-up benchmark's command line."""
    ap = argparse.ArgumentParser("python -m bench.startup", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--eager", action="store_true", help="also a cold+warm pair with --enforce-eager"
    )
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    ap.add_argument("--label", default="", help="suffix of this configuration's run names")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "nanoserve-startup")
    ap.add_argument("--json", type=Path, default=BENCH / "results" / "startup.json")
    ap.add_argument(
        "--append",
        action="store_true",
        help="add these runs to --json's (e.g. another configuration, given --env and --label)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    os.chdir(ROOT)
    env_extra = dict(kv.split("=", 1) for kv in args.env)
    runs = {}
    for eager in (False, True) if args.eager else (False,):
        caches = args.out / ("caches-eager" if eager else "caches")
        for kind in ("cold", "warm"):
            label = f"{kind}{'-eager' if eager else ''}{args.label}"
            runs[label] = start_once(label, caches, args.out, eager, env_extra)
    sizes = {
        d.name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) // 2**20
        for d in (args.out / "caches").iterdir()
    }
    date = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for run in runs.values():  # each run says when and with what it ran: --append mixes them
        run |= {"date": date, "env": env_extra}
    result = {"date": date, "cpus": os.cpu_count(), "runs": runs, "cache_mib": sizes}
    if args.append and args.json.is_file():
        result["runs"] = json.loads(args.json.read_text())["runs"] | runs
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

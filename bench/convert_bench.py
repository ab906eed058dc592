"""Conversion benchmark: a GPT-2-124M-shaped nanoGPT checkpoint (random weights) through the CLI.

    .venv/bin/python -m bench.convert_bench [--no-opt] [--keep DIR]

Builds the checkpoint as nanoGPT's train.py would save it (weights, AdamW state, metadata), runs
`python -m nanoserve.convert` on it in a child process, and reports that child's wall time and
peak RSS.
Both run in children of a parent that never imports torch: Linux carries the parent's peak RSS
into a vfork+exec'd child's ru_maxrss, which would otherwise report the builder's memory.
Results are printed and merged into bench/results/convert.json (one entry per variant).
Targets (issue 2): < 15 s wall and peak RSS < 3x the checkpoint file.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results" / "convert.json"
WALL_TARGET_S = 15.0
RSS_TARGET_X = 3.0


def build_checkpoint(path: Path, optimizer: bool) -> None:
    """Save a 124M-shaped checkpoint; with `optimizer`, one AdamW step's state as train.py saves."""
    import torch
    from nanoserve.convert.reference import GPT, GPTConfig, make_checkpoint

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=1024, vocab_size=50304, n_layer=12, n_head=12, n_embd=768))
    extra: dict = {"iter_num": 5000, "best_val_loss": torch.tensor(2.85)}
    extra["config"] = {"dataset": "openwebtext", "batch_size": 12}
    if optimizer:
        opt = torch.optim.AdamW(model.parameters(), lr=6e-4)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        opt.step()
        extra["optimizer"] = opt.state_dict()
    torch.save(make_checkpoint(model, **extra), path)


def run_child(cmd: list[str]) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds, peak RSS bytes, output) of one child process."""
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not all children's
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        log.seek(0)
        out = log.read()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out}")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss * 1024, out  # ru_maxrss is KiB on Linux


def measure(work: Path, optimizer: bool) -> dict:
    """Build the checkpoint in `work`, convert it, and return the measurements."""
    ckpt, out = work / "ckpt.pt", work / "hf"
    load = os.getloadavg()[0]  # others' load on a shared machine, before ours starts
    build = [sys.executable, "-m", "bench.convert_bench", "--build", str(ckpt)]
    run_child(build + ([] if optimizer else ["--no-opt"]))
    wall, cpu, peak, log = run_child(
        [sys.executable, "-m", "nanoserve.convert", str(ckpt), "--out", str(out)]
    )
    print(log, end="")
    size = ckpt.stat().st_size
    return {
        "checkpoint": "GPT-2 124M shape: 12 layers, 768 wide, 12 heads, vocab 50304, block 1024",
        "optimizer_state": optimizer,
        "checkpoint_bytes": size,
        "output_bytes": sum(f.stat().st_size for f in out.iterdir()),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),  # user + sys: compare with wall on a shared machine
        "load_avg_1min_before": round(load, 2),
        "peak_rss_bytes": peak,
        "peak_rss_over_checkpoint": round(peak / size, 2),
        "targets": {"wall_s": WALL_TARGET_S, "peak_rss_over_checkpoint": RSS_TARGET_X},
        "met": {"wall": wall < WALL_TARGET_S, "rss": peak < RSS_TARGET_X * size},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": version("torch"),
        },
    }


def report(r: dict) -> None:
    """Print one summary line and merge `r` into the results file under its variant."""
    variant = "training_checkpoint" if r["optimizer_state"] else "weights_only"
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[variant] = r
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"{variant}: checkpoint {r['checkpoint_bytes'] / 1e6:.0f} MB  wall {r['wall_s']:.1f} s "
        f"(target < {WALL_TARGET_S:.0f}; cpu {r['cpu_s']:.1f} s, load avg "
        f"{r['load_avg_1min_before']:.1f} on {os.cpu_count()} cpus)  peak RSS "
        f"{r['peak_rss_bytes'] / 1e6:.0f} MB = {r['peak_rss_over_checkpoint']:.2f}x checkpoint "
        f"(target < {RSS_TARGET_X:.0f}x)  -> {RESULTS.relative_to(ROOT)}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        "python -m bench.convert_bench", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--no-opt", action="store_true", help="weights-only checkpoint (no AdamW)")
    ap.add_argument("--keep", type=Path, help="build the checkpoint and output here, and keep them")
    ap.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # internal: the builder child
    args = ap.parse_args(argv)
    if args.build:
        build_checkpoint(args.build, optimizer=not args.no_opt)
        return 0
    work = args.keep or Path(tempfile.mkdtemp(prefix="convert-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"building checkpoint in {work} ...", flush=True)
    try:
        report(measure(work, optimizer=not args.no_opt))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

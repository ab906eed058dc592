"""Turn a run's records into results.json, results.md and the plots.

Every figure is the median over repeats with the min-max range beside it. Ratios against vLLM's
server are paired by repeat (the two ran minutes apart in the same rotation) before the median is
taken, which cancels most of a shared machine's drift.
"""

import json
import statistics
from pathlib import Path

import plots
from servers import LABELS

ROOT = Path(__file__).resolve().parents[1]
CONVERT_JSON = ROOT / "bench" / "results" / "convert.json"  # written by bench/convert_bench.py
COLUMNS = (  # (record key, header, decimals)
    ("output_throughput", "output tok/s", 1),
    ("request_throughput", "req/s", 2),
    ("p50_ttft_ms", "TTFT p50 ms", 1),
    ("p95_ttft_ms", "TTFT p95 ms", 1),
    ("p50_tpot_ms", "TPOT p50 ms", 2),
)
TARGETS = {"vllm_ratio": 0.97, "added_ttft_ms": 5.0, "naive_ratio": 20.0}  # issue 5, at c >= 16
TARGET_NAMES = {
    "vllm_ratio": "throughput / vLLM's server",
    "added_ttft_ms": "added TTFT p50 (ms) over vLLM's server",
    "naive_ratio": "throughput / naive server",
}


def case_json(case) -> dict:
    levels = {
        s: [[lv.concurrency, lv.prompts, lv.warmups] for lv in lvs]
        for s, lvs in case.levels.items()
    }
    return {
        "model": case.model,
        "input_len": case.input_len,
        "output_len": case.output_len,
        "levels [concurrency, prompts, warmups]": levels,
    }


def spread(values: list) -> dict | None:
    """Median, min, max and count of the non-missing values; None if there are none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def _pick(runs: list, **where) -> list:
    return [r for r in runs if all(r[k] == v for k, v in where.items())]


def summarize(runs: list) -> list:
    """A row per model x server x concurrency: each metric's spread over repeats, errors summed."""
    model_order = list(dict.fromkeys(r["model"] for r in runs))  # as run: the demo first
    keys = sorted(
        {(r["model"], r["server"], r["concurrency"]) for r in runs},
        key=lambda k: (model_order.index(k[0]), list(LABELS).index(k[1]), k[2]),
    )
    rows = []
    for model, server, c in keys:
        rs = _pick(runs, model=model, server=server, concurrency=c)
        row = {"model": model, "server": server, "concurrency": c, "prompts": rs[0]["prompts"]}
        row |= {key: spread([r[key] for r in rs]) for key, _, _ in COLUMNS}
        row["errors"] = sum(r["errors"] for r in rs)
        rows.append(row)
    return rows


def _paired(runs: list, model: str, c: int, other: str, fn) -> dict | None:
    """Spread over repeats of fn(nanoserve record, `other`'s record at the same repeat)."""
    vals = []
    for mine in _pick(runs, model=model, server="nanoserve", concurrency=c):
        theirs = _pick(runs, model=model, server=other, concurrency=c, repeat=mine["repeat"])
        if not theirs:  # a serialized server not run at this level: compare with its best level
            same_rep = _pick(runs, model=model, server=other, repeat=mine["repeat"])
            best = max(same_rep, key=lambda r: r["output_throughput"] or 0, default=None)
            theirs = [best | {"best": True}] if best else []
        if theirs:
            vals.append((fn(mine, theirs[0]), theirs[0].get("best", False)))
    out = spread([v for v, _ in vals])
    if out is not None:
        out["vs_best_level"] = any(b for _, b in vals)
    return out


def _ratio(key: str):
    return lambda a, b: a[key] / b[key] if a[key] and b[key] else None


def _diff(key: str):
    return lambda a, b: a[key] - b[key] if a[key] is not None and b[key] is not None else None


def ratios(runs: list) -> list:
    """Per model x concurrency: nanoserve against vLLM's server and the naive baselines."""
    rows = []
    for model, c in sorted(
        {(r["model"], r["concurrency"]) for r in _pick(runs, server="nanoserve")}
    ):
        rows.append(
            {
                "model": model,
                "concurrency": c,
                "vllm_ratio": _paired(runs, model, c, "vllm", _ratio("output_throughput")),
                "added_ttft_ms": _paired(runs, model, c, "vllm", _diff("p50_ttft_ms")),
                "naive_ratio": _paired(runs, model, c, "naive", _ratio("output_throughput")),
                "hf_ratio": _paired(runs, model, c, "hf", _ratio("output_throughput")),
            }
        )
    return rows


def targets(ratio_rows: list) -> list:
    """The issue's targets at concurrency >= 16, checked on the medians."""
    checks = []
    for row in (r for r in ratio_rows if r["concurrency"] >= 16):
        for key, goal in TARGETS.items():
            if (s := row[key]) is None:
                continue
            ok = s["median"] <= goal if key == "added_ttft_ms" else s["median"] >= goal
            checks.append(
                {
                    "model": row["model"],
                    "concurrency": row["concurrency"],
                    "target": key,
                    "goal": goal,
                    "median": s["median"],
                    "met": ok,
                }
            )
    return checks


def fmt(s: dict | None, decimals: int) -> str:
    """`median (min–max)`, or `—` when nothing was measured."""
    if s is None:
        return "—"
    med = f"{s['median']:.{decimals}f}"
    return med if s["n"] == 1 else f"{med} ({s['min']:.{decimals}f}–{s['max']:.{decimals}f})"


def write(out: Path, info: dict) -> None:
    """results.json, results.md and the PNG plots into `out`."""
    info["summary"] = summarize(info["runs"])
    info["ratios"] = ratios(info["runs"])
    info["targets"] = targets(info["ratios"])
    if CONVERT_JSON.is_file():
        info["convert"] = json.loads(CONVERT_JSON.read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(info, indent=1) + "\n")
    info["plots"] = plots.draw(info["summary"], out)
    (out / "results.md").write_text(markdown(info))


def _convert_line(e: dict) -> str:
    """One conversion's figures; tolerant of fields convert_bench.py may not write."""
    goal = e.get("targets", {})
    text = f"{e.get('checkpoint', 'checkpoint')}"
    if "checkpoint_bytes" in e:
        text += f", {e['checkpoint_bytes'] / 1e6:.0f} MB file"
    text += f": **{e['wall_s']:.1f} s** wall"
    if "wall_s" in goal:
        text += f" (target < {goal['wall_s']:g} s)"
    if "peak_rss_bytes" in e:
        text += f", peak RSS **{e['peak_rss_bytes'] / 1e6:.0f} MB**"
    if "peak_rss_over_checkpoint" in e:
        text += f" = {e['peak_rss_over_checkpoint']:.2f}× the checkpoint"
    if "peak_rss_over_checkpoint" in goal:
        text += f" (target < {goal['peak_rss_over_checkpoint']:g}×)"
    if "load_avg_1min_before" in e:
        text += f"; load average {e['load_avg_1min_before']} before"
    return text


def _convert_md(conv: dict) -> list[str]:
    """The converter's numbers: one entry, or one per variant (a dict of entries)."""
    if "wall_s" in conv:
        entries = {"": conv}
    else:
        entries = {k: v for k, v in conv.items() if isinstance(v, dict) and "wall_s" in v}
    lines = [
        "",
        "## Converter",
        "",
        "From `bench/convert_bench.py` (bench/results/convert.json):",
        "",
    ]
    lines += [f"- {name + ': ' if name else ''}{_convert_line(e)}" for name, e in entries.items()]
    if not entries:
        lines += ["```json", json.dumps(conv, indent=1), "```"]
    return lines


def _load_range(runs: list) -> str:
    loads = [r["load_avg_before"] for r in runs if r.get("load_avg_before") is not None]
    return f"{min(loads):.1f}–{max(loads):.1f}" if loads else "—"


def markdown(info: dict) -> str:
    """The human-readable report."""
    m = info["machine"]
    lines = [
        "# nanoserve benchmark" + (" (smoke)" if info["smoke"] else ""),
        "",
        f"- date: {info['date']}; wall time {info['wall_s'] / 60:.1f} min",
        f"- machine: {m['cpus']} CPUs, {m['cpu_model']}; 1-min load average at start "
        f"{m['load_avg_at_start'][0]}, before each server's runs {_load_range(info['runs'])} "
        "(this benchmark itself adds 1-3; more means other work shared the cores)",
        f"- software: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}; "
        f"nanoserve {m['git']}",
        f"- command: `{info['command']}`",
        f"- load: `vllm bench serve` (openai backend, streaming `/v1/completions`, random prompts "
        f"of fixed length, `--ignore-eos`); {info['repeats']} repeat(s); cells are median "
        "(min–max) over repeats",
        "- nanoserve and vLLM's server run the same engine settings (below) with auth on; the "
        "naive servers run one request at a time, so they get fewer requests and levels (the "
        "`requests` column)",
    ]
    for case in info["cases"]:
        lines += _case_md(info, case)
    lines += ["", *(f"![{name}]({name})" for name in info["plots"])]
    if "convert" in info:
        lines += _convert_md(info["convert"])
    lines += ["", "## Server commands", ""]
    lines += [f"- {k}: `{v}`" for k, v in info["server_commands"].items()]
    lines += [f"- load client (one level): `{info['client_command_example']}`"]
    lines += ["", f"Engine settings: `{json.dumps(info['engine_settings'])}`", ""]
    return "\n".join(lines)


def _case_md(info: dict, case: dict) -> list[str]:
    model = case["model"]
    head = "| server | concurrency | requests | " + " | ".join(h for _, h, _ in COLUMNS)
    lines = [
        "",
        f"## {model}: {case['input_len']} prompt → {case['output_len']} output tokens",
        "",
        head + " | errors |",
        "|---" * (len(COLUMNS) + 4) + "|",
    ]
    for row in _pick(info["summary"], model=model):
        cells = [fmt(row[k], d) for k, _, d in COLUMNS]
        lines.append(
            f"| {LABELS[row['server']]} | {row['concurrency']} | {row['prompts']} | "
            + " | ".join(cells)
            + f" | {row['errors']} |"
        )
    return lines + _ratios_md(info, model)


def _ratios_md(info: dict, model: str) -> list[str]:
    rows = _pick(info["ratios"], model=model)
    if not rows:
        return []
    lines = [
        "",
        "| concurrency | nanoserve / vLLM tok/s | added TTFT p50 ms | nanoserve / naive "
        "| nanoserve / HF |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [fmt(row["vllm_ratio"], 3), fmt(row["added_ttft_ms"], 1)]
        for key in ("naive_ratio", "hf_ratio"):
            dag = " †" if row[key] and row[key]["vs_best_level"] else ""
            cells.append(fmt(row[key], 1) + dag)
        lines.append(f"| {row['concurrency']} | " + " | ".join(cells) + " |")
    lines.append(
        "\nRatios are paired by repeat, then the median (min–max) is taken. † that server was "
        "not run at this concurrency: against its best measured throughput (a one-at-a-time "
        "server does not speed up with more clients)."
    )
    for t in _pick(info["targets"], model=model):
        verdict = "met" if t["met"] else "**not met**"
        lines.append(
            f"- c={t['concurrency']} {TARGET_NAMES[t['target']]}: {t['median']:.3g} "
            f"(target {'≤' if t['target'] == 'added_ttft_ms' else '≥'} {t['goal']}) {verdict}"
        )
    return lines

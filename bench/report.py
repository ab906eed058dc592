"""Turn a run's records into results.json, results.md and the plots.

Only valid records count (bench/validity.py: no failed request, a quiet machine): every figure is
the median over the valid repeats with the min-max range beside it, and a cell with none is left
out of the tables and listed with its reasons instead. Ratios against vLLM's server are paired
(the two ran back to back, one after the other) before the median is taken, which cancels most of
a shared machine's drift; a pair with an invalid side gives no ratio.

    .venv/bin/python -m bench.report bench/results/results.json [--max-load 1.5]

re-renders results.md and the plots from a results.json with the validity rule applied.
"""

import argparse
import json
import sys
from pathlib import Path

from bench import plots, validity
from bench.servers import LABELS
from bench.summary import COLUMNS, MIN_PAIRS, pick, ratios, summarize, targets

ROOT = Path(__file__).resolve().parents[1]
CONVERT_JSON = ROOT / "bench" / "results" / "convert.json"  # written by bench/convert_bench.py
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


def fmt(s: dict | None, decimals: int) -> str:
    """`median (min–max)`, or `—` when nothing was measured."""
    if s is None:
        return "—"
    med = f"{s['median']:.{decimals}f}"
    return med if s["n"] == 1 else f"{med} ({s['min']:.{decimals}f}–{s['max']:.{decimals}f})"


def analyze(info: dict) -> dict:
    """Mark each record valid or not, and add the summary, ratios and targets; `info`."""
    validity.mark(info["runs"], info.setdefault("max_load", validity.DEFAULT_MAX_LOAD))
    info["summary"] = summarize(info["runs"])
    info["ratios"] = ratios(info["runs"])
    info["targets"] = targets(info["ratios"])
    return info


def write(out: Path, info: dict) -> None:
    """results.json, results.md and the PNG plots into `out`."""
    analyze(info)
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
    """The human-readable report: valid cells only, the others listed with their reasons."""
    m = info["machine"]
    good = validity.valid(info["runs"])
    lines = [
        "# nanoserve benchmark" + (" (smoke)" if info["smoke"] else ""),
        "",
        f"- date: {info['date']}; wall time {info['wall_s'] / 60:.1f} min",
        f"- machine: {m['cpus']} CPUs, {m['cpu_model']}; 1-min load average at start "
        f"{m['load_avg_at_start'][0]}, before each server started {_load_range(info['runs'])}",
        f"- validity: {len(good)} of {len(info['runs'])} records valid (no failed request, load "
        f"average ≤ {info['max_load']:g} before the server started); only those are in the "
        "tables and ratios",
        f"- software: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}; "
        f"nanoserve {m['git']}",
        f"- command: `{info['command']}`",
        *(
            f"- then, {a['date']} ({a['wall_s'] / 60:.1f} min, nanoserve {a['git']}), records "
            f"added by `{a['command']}`"
            for a in info.get("appended", [])
        ),
        f"- load: `vllm bench serve` (openai backend, streaming `/v1/completions`, random prompts "
        f"of fixed length, `--ignore-eos`); {_runs_line(info)}; cells are median (min–max) over "
        "the valid runs",
        "- nanoserve and vLLM's server run the same engine settings (below) with auth on, one "
        "server up at a time; the naive servers run one request at a time, so they get fewer "
        "requests and levels (the `requests` column)",
    ]
    for case in info["cases"]:
        lines += case_md(info, case)
    lines += _invalid_md(info["runs"])
    lines += ["", *(f"![{name}]({name})" for name in info["plots"])]
    if "convert" in info:
        lines += _convert_md(info["convert"])
    lines += ["", "## Server commands", ""]
    lines += [f"- {k}: `{v}`" for k, v in info["server_commands"].items()]
    lines += [f"- load client (one level): `{info['client_command_example']}`"]
    lines += ["", f"Engine settings: `{json.dumps(info['engine_settings'])}`", ""]
    return "\n".join(lines)


def _runs_line(info: dict) -> str:
    if "pairs" not in info:  # a results.json from before alternating pairs
        return f"{info['repeats']} repeat(s), servers in rotating order"
    return (
        f"{info['pairs']} alternating pair(s) nanoserve → vLLM's server, "
        f"{info['repeats']} run(s) of each baseline between them"
    )


def _invalid_md(runs: list) -> list[str]:
    """One line per server instance with an invalid record: which levels, and why."""
    bad: dict[tuple, list] = {}
    for r in runs:
        if not r["valid"]:
            bad.setdefault((r["model"], r["server"], r["repeat"]), []).append(r)
    if not bad:
        return []
    lines = ["", "## Left out (invalid runs)", ""]
    for (model, server, repeat), rs in bad.items():
        levels = ", ".join(str(r["concurrency"]) for r in rs)
        reasons = "; ".join(dict.fromkeys(x for r in rs for x in r["invalid_reason"].split("; ")))
        lines.append(f"- {model} {LABELS[server]} run {repeat}, c={levels}: {reasons}")
    return lines


def case_md(info: dict, case: dict, heading: str = "##") -> list[str]:
    """One model's table of valid cells, its ratios and targets."""
    model = case["model"]
    title = f"{heading} {model}: {case['input_len']} prompt → {case['output_len']} output tokens"
    rows = [r for r in pick(info["summary"], model=model) if r["valid_runs"]]
    if not rows:
        return ["", title, "", "No valid run of any server: see the runs left out below."]
    # a column no record has (e.g. CPU use, in runs from before it was measured) is left out
    columns = [c for c in COLUMNS if any(row[c[0]] for row in rows)]
    lines = [
        "",
        title,
        "",
        "| server | concurrency | requests | valid runs | "
        + " | ".join(h for _, h, _ in columns)
        + " |",
        "|---" * (len(columns) + 4) + "|",
    ]
    for row in rows:
        cells = [fmt(row[k], d) for k, _, d in columns]
        lines.append(
            f"| {LABELS[row['server']]} | {row['concurrency']} | {row['prompts']} | "
            f"{row['valid_runs']}/{row['runs']} | " + " | ".join(cells) + " |"
        )
    return lines + _ratios_md(info, model)


def _ratios_md(info: dict, model: str) -> list[str]:
    rows = [
        r
        for r in pick(info["ratios"], model=model)
        if any(r[k] for k in ("vllm_ratio", "naive_ratio", "hf_ratio"))  # a valid pair
    ]
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
    how = "run back to back" if "pairs" in info else "the same repeat of a rotating order"
    if info.get("appended"):  # baselines measured in a later run pair with the earlier runs
        how += "; records added by a later run pair with the same k-th run of the first"
    lines.append(
        f"\nRatios are paired (nanoserve's k-th run with the other server's k-th, {how}), then "
        "the median (min–max) is taken; a pair with an invalid side is left out. † that server "
        "was not run at this concurrency: against its best measured throughput (a one-at-a-time "
        "server does not speed up with more clients)."
    )
    for t in pick(info["targets"], model=model):
        verdict = "met" if t["met"] else "**not met**"
        if t["pairs"] < MIN_PAIRS:
            verdict += f", but from fewer than {MIN_PAIRS} pairs: not conclusive"
        sign = "≤" if t["target"] == "added_ttft_ms" else "≥"
        lines.append(
            f"- c={t['concurrency']} {TARGET_NAMES[t['target']]}: {t['median']:.3g} (median of "
            f"{t['pairs']} valid pair(s); target {sign} {t['goal']}): {verdict}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        "python -m bench.report", description="Re-render results.md and plots from results.json."
    )
    ap.add_argument("results", type=Path, help="a results.json written by bench.run")
    ap.add_argument("--max-load", type=float, help="override the run's validity threshold")
    args = ap.parse_args(argv)
    info = json.loads(args.results.read_text())
    if args.max_load is not None:
        info["max_load"] = args.max_load
    write(args.results.parent, info)
    print(f"wrote {args.results.parent / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

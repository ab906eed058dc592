"""What a run's records add up to: spreads over the valid runs, and paired ratios.

A spread is the median with the min-max range and the count; a ratio against another server is
taken pair by pair (nanoserve's k-th run with the other's k-th, run back to back) and only where
both records are valid (bench/validity.py).
"""

import statistics

from bench import validity
from bench.servers import LABELS

COLUMNS = (  # (record key, header, decimals)
    ("output_throughput", "output tok/s", 1),
    ("request_throughput", "req/s", 2),
    ("p50_ttft_ms", "TTFT p50 ms", 1),
    ("p95_ttft_ms", "TTFT p95 ms", 1),
    ("p50_tpot_ms", "TPOT p50 ms", 2),
    # the HTTP front end's own CPU (its main process, not the engine's) per generated token:
    # on 2 cores taken from the engine (bench/usage.py CpuSampler); engine servers only
    ("front_cpu_ms_per_token", "front-end CPU ms/token", 3),
)
MIN_PAIRS = 5  # a target is settled by the median of at least this many valid pairs (issue 17)
TARGETS = {"vllm_ratio": 1.0, "added_ttft_ms": 5.0, "naive_ratio": 20.0}  # issues 5, 17; c >= 16


def spread(values: list) -> dict | None:
    """Median, min, max and count of the non-missing values; None if there are none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def pick(runs: list, **where) -> list:
    return [r for r in runs if all(r[k] == v for k, v in where.items())]


def summarize(runs: list) -> list:
    """A row per model x server x concurrency: each metric's spread over the valid repeats,
    errors summed over all of them."""
    model_order = list(dict.fromkeys(r["model"] for r in runs))  # as run: the demo first
    keys = sorted(
        {(r["model"], r["server"], r["concurrency"]) for r in runs},
        key=lambda k: (model_order.index(k[0]), list(LABELS).index(k[1]), k[2]),
    )
    rows = []
    for model, server, c in keys:
        rs = pick(runs, model=model, server=server, concurrency=c)
        good = validity.valid(rs)
        row = {"model": model, "server": server, "concurrency": c, "prompts": rs[0]["prompts"]}
        row |= {key: spread([r.get(key) for r in good]) for key, _, _ in COLUMNS}
        row |= {"runs": len(rs), "valid_runs": len(good), "errors": sum(r["errors"] for r in rs)}
        row["invalid_reasons"] = sorted({r["invalid_reason"] for r in rs if not r["valid"]})
        rows.append(row)
    return rows


def _paired(runs: list, model: str, c: int, other: str, fn) -> dict | None:
    """Spread over repeats of fn(nanoserve record, `other`'s record at the same repeat), valid
    records only."""
    good = validity.valid(runs)
    vals = []
    for mine in pick(good, model=model, server="nanoserve", concurrency=c):
        theirs = pick(good, model=model, server=other, concurrency=c, repeat=mine["repeat"])
        ran = pick(runs, model=model, server=other, concurrency=c, repeat=mine["repeat"])
        if not ran:  # a serialized server not run at this level: compare with its best level
            same_rep = pick(good, model=model, server=other, repeat=mine["repeat"])
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
        {(r["model"], r["concurrency"]) for r in pick(runs, server="nanoserve")}
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
                    "pairs": s["n"],
                    "met": ok,
                }
            )
    return checks

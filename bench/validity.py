"""When a benchmark record counts: the rule that keeps a busy machine or a failed request out of
the tables.

A record (one server instance at one load level) is invalid if any request failed, if the server
never became ready, or if the 1-minute load average was above `max_load` just before the server
was started (other work on the cores: on 2 shared cores it takes the CPU the servers compete for).
Invalid records stay in results.json with their reasons; no median or ratio is computed from them.
"""

DEFAULT_MAX_LOAD = 1.5  # on 2 cores; a quiet machine settles below 0.5 within a minute


def problems(record: dict, max_load: float) -> list[str]:
    """Why `record` can't be trusted; empty when it can."""
    found = []
    if record.get("ready_s") is None:
        found.append("server not ready")
    if record.get("errors"):
        found.append(f"{record['errors']} of {record['prompts']} requests failed")
    load = record.get("load_avg_before")
    if load is not None and load > max_load:
        found.append(f"load average {load:g} > {max_load:g} before the server started")
    return found


def mark(runs: list[dict], max_load: float) -> list[dict]:
    """Set `valid` and `invalid_reason` on every record (in place); the runs, for chaining."""
    for r in runs:
        reasons = problems(r, max_load)
        r["valid"] = not reasons
        r["invalid_reason"] = "; ".join(reasons) or None
    return runs


def valid(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r.get("valid")]

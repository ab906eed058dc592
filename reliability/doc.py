"""docs/RELIABILITY.md, written from reliability/results/reliability.json (never by hand).

Each scenario's entry keeps the command, date, commit and machine load of the run that produced
it, so a run of a subset (CI's `fast`, or the soak alone) updates only its own sections.
"""

import datetime
import json
import os
import subprocess
from dataclasses import asdict
from pathlib import Path

from harness.processes import ROOT

RESULTS = ROOT / "reliability" / "results" / "reliability.json"
DOC = ROOT / "docs" / "RELIABILITY.md"
TITLES_ORDER = ("security", "redis", "admission", "deadlines", "disconnect", "engine", "rolling")
TITLES_ORDER += ("sigkill", "sigterm", "soak")
MEASURED = ("reliability", "harness", "server", "convert", "deploy", "nanoserve")
EXCLUDED = ":(exclude)reliability/results"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout

    # what the figures depend on: the harness, the server and the shipped deployment files
    # (not the recorded figures themselves: a run's --write must not mark the next one dirty)
    changed = git("status", "--porcelain", "--untracked-files=no", "--", *MEASURED, EXCLUDED)
    dirty = "+uncommitted changes" if changed else ""
    return git("rev-parse", "--short", "HEAD").strip() + dirty


def stamp(command: str) -> dict:
    return {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "cpus": os.cpu_count(),
    }


def record(results: list, run_info: dict, when: dict, path: Path = RESULTS) -> None:
    """Merge these results (run as `when`, a `stamp` taken before the run) into the JSON
    record and rewrite the doc."""
    data = json.loads(path.read_text()) if path.exists() else {}
    command = when["command"]
    for r in results:
        data[r.name] = {**asdict(r), "passed": r.passed, **when}
    data.setdefault("_runs", {})[command] = {**run_info, **when}
    path.write_text(json.dumps(data, indent=1) + "\n")
    DOC.write_text(render(data))


NOT_RUN = (  # the docs test runs every block not marked so (tests/support/docs_blocks.py)
    '<!--pytest.mark.not_run(reason="starts nginx, Redis and two engines and restarts them for '
    "about 10 minutes (the soak: 10 more); tests/reliability/test_scenarios.py runs the fast "
    'scenarios through the same code")-->'
)
HEADER = """\
# Reliability: faults, overload and drains, measured

<!-- Written by reliability/run.py and reliability/soak.py from
     reliability/results/reliability.json: edit those, not this file. -->

What clients see when parts of a deployment fail on purpose. Everything runs on loopback: a real
nginx with this repository's `deploy/nginx/nginx.conf` (only its `listen` port, its upstream
servers and its pid file replaced), two nanoserve replicas on the demo model (keys in a key file,
limits counted in Redis, JSON logs; replica `b` also runs `--max-num-seqs 4` and a small admission
backlog, so that queues form; each replica's engine worker has a core of its own, as on separate
machines), and a real `redis-server`.

The load mixes the `openai` SDK with its default retries (what most users run) and a raw HTTP
client that never retries (it shows what the SDK hides), streaming and not, through nginx
unless a scenario addresses one replica directly. A request is **accepted** once its 200
arrived (a stream's headers come with its first event) and **lost** if it was accepted but never
completed: no `finish_reason`, fewer characters than tokens counted, or a stream that ended
without `[DONE]` or with an error event. Where a fault must lose some (streams on a replica or
an engine that died), the scenario checks that only those were lost. Latencies are of the
completed requests; the load average is the machine's, other people's work included.

{not_run}
```bash
.venv/bin/python -m reliability --write          # every scenario; rewrites this file
.venv/bin/python -m reliability --write fast     # the CI subset only
.venv/bin/python -m reliability.soak --write     # 10 minutes of mixed traffic
```

## What a deployment can rely on

- **A replica that stops (SIGTERM)** closes its listening socket at once and flips `/ready` to
  503; requests already on it finish, streams included. Its idle keep-alive connections are
  closed (measured below), and a request that still reaches it on an open connection gets 503 +
  `Retry-After`; nginx retries both on another replica (`proxy_next_upstream error ... http_503
  non_idempotent`). Once the last request is done it stops its engine and exits 0; requests
  still open 2 s before `--graceful-shutdown-timeout` end by their deadline. Stopping the engine
  takes up to ~20 s more (its processes get 10 s to end, then the memory is freed), so a
  supervisor must wait the timeout + 20 s (Kubernetes' 60 s covers it with the 10 s preStop).
- **A replica that dies (SIGKILL, OOM, node loss)**: requests that had not received a byte are
  retried by nginx on another replica, so neither client sees them fail. **Streams that were
  mid-flight on it are cut** (no `[DONE]`): their tokens were delivered, so no proxy or SDK can
  replay them transparently; the client must resend.
- **An engine core that dies**: its replica's streams end with an error event and `[DONE]`,
  `/ready` turns 503, and the process exits non-zero within seconds for its supervisor to
  restart it; new requests go to the other replica.
- **Redis unreachable**: nanoserve fails closed (503 + `Retry-After` on every replica) unless
  `--ratelimit-fail-open`; once Redis is back, requests succeed without restarting anything.
- **Rolling model update**: each version is served under a versioned `--served-model-name`
  (`shakespeare-v1`, `shakespeare-v2`) plus a stable `--model-alias` (`shakespeare`). Responses
  name the version that answered. By design, clients of the alias never fail during the roll;
  clients that pin a version get it while any replica serves it, then 404 `model_not_found` —
  never silently another version.
- **Overload**: beyond `--max-queued-requests` / `--max-queued-tokens`, an immediate 503
  `server_overloaded` with `Retry-After` and `retry-after-ms`, without touching the engine.
  `X-Request-Timeout` (capped by `--request-timeout`): no first token in time is a 503
  `queue_timeout`; generating past it returns the text so far with `finish_reason: "timeout"`.
"""


def _claims(entry: dict) -> str:
    return "".join(f"- {'✓' if ok else '✗ **FAILED**'} {claim}\n" for claim, ok in entry["claims"])


def _cell(v) -> str:
    return "–" if v is None else str(v)


def _load_table(figures: dict) -> str:
    rows = "| client | sent | outcomes | failures | lost | p50 s | p95 s |\n"
    rows += "| --- | --- | --- | --- | --- | --- | --- |\n"
    for label, f in [*figures["by_client"].items(), ("**all**", figures)]:
        outcomes = ", ".join(f"{k} × {v}" for k, v in f["statuses"].items())
        rows += f"| {label} | {f['sent']} | {outcomes} | {f['failures']} | {f['lost']} "
        rows += f"| {_cell(f['p50_s'])} | {_cell(f['p95_s'])} |\n"
    if figures.get("failed_examples"):
        rows += "\nFirst failures: " + "; ".join(f"`{x}`" for x in figures["failed_examples"])
        rows += "\n"
    return rows


def _is_load(v) -> bool:
    return isinstance(v, dict) and "by_client" in v


def _section(e: dict) -> str:
    out = f"## {e['title']} — {_verdict(e)}\n\n"
    out += f"`{e['command']}`, {e['date']}, commit `{e['commit']}`, {e['cpus']} CPUs, "
    load = e["figures"].get("loadavg_1m")
    out += f"load average {load[0]} → {load[1]}, {e['seconds']} s.\n\n" if load else "\n\n"
    if e.get("skipped"):
        return out + f"Not run: {e['skipped']}.\n\n"
    out += _claims(e) + "\n"
    for key, value in e["figures"].items():
        if _is_load(value):
            name = "" if key == "load" else f" (`{key}` clients)"
            out += f"Load{name}:\n\n{_load_table(value)}\n"
    rest = {k: v for k, v in e["figures"].items() if not _is_load(v) and k != "loadavg_1m"}
    out += "".join(f"- {k}: {json.dumps(v)}\n" for k, v in rest.items())
    out += "\n" + "".join(f"{n}\n\n" for n in e["notes"])
    return out


def _verdict(e: dict) -> str:
    return "not run" if e.get("skipped") else "pass" if e["passed"] else "**FAIL**"


def _summary(data: dict) -> str:
    out = "| scenario | verdict | requests | lost | SDK failures | claims failed | run |\n"
    out += "| --- | --- | --- | --- | --- | --- | --- |\n"
    for name in TITLES_ORDER:
        if name not in data:
            continue
        e = data[name]
        loads = [v for v in e["figures"].values() if _is_load(v)]
        sent = sum(f["sent"] for f in loads) or e["figures"].get("requests", "–")
        lost = sum(f["lost"] for f in loads) if loads else "–"
        sdk = sum(f["sdk_failures"] for f in loads) if loads else "–"
        failed = sum(not ok for _, ok in e["claims"])
        out += f"| {e['title']} | {_verdict(e)} | {sent} | {lost} | {sdk} | {failed} "
        out += f"| {e['date']}, `{e['commit']}` |\n"
    return out


def render(data: dict) -> str:
    out = HEADER.replace("{not_run}", NOT_RUN) + "\n## Summary\n\n" + _summary(data)
    out += "\nRuns (wall time includes starting and restarting the engines):\n\n"
    out += "| command | date | commit | wall time |\n| --- | --- | --- | --- |\n"
    for command, run in data.get("_runs", {}).items():
        out += f"| `{command}` | {run['date']} | `{run['commit']}` | {run['wall_seconds']} s |\n"
    out += "\n"
    for name in TITLES_ORDER:
        if name in data:
            out += _section(data[name])
    return out.rstrip("\n") + "\n"

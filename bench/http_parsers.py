"""What the bounded h11 parser costs against uvicorn's default httptools, front end only.

    .venv/bin/python bench/http_parsers.py [--requests 2000] [--concurrency 16]

The real app (auth, limits, metrics, access log) over the tests' instant fake engine, served by
uvicorn with each HTTP implementation in turn on 127.0.0.1; an httpx client sends non-streaming
16-token completions. Prints requests/s per implementation and their ratio, and writes
bench/results/http_parsers.json. A run with a failed request, or started on a busy machine
(1-minute load above the core count), is marked invalid and no ratio is given.
"""

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from bench.procs import free_port  # noqa: E402
from server.app import create_app  # noqa: E402
from server.http import bounded_protocol  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.server.fakes import FakeEngine  # noqa: E402


def serve(http, port: int) -> uvicorn.Server:
    async def load():
        return FakeEngine(max_model_len=64)

    settings = Settings(api_keys=["k"], log_level="error")
    app = create_app(settings, load, registry=CollectorRegistry())
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=http, log_level="error")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


async def drive(url: str, n: int, concurrency: int) -> tuple[float, int]:
    body = {"model": "fake", "prompt": "abc", "max_tokens": 16}
    sem = asyncio.Semaphore(concurrency)
    failed = 0
    async with httpx.AsyncClient(headers={"Authorization": "Bearer k"}, timeout=30) as c:
        while (await c.get(url + "/ready")).status_code != 200:
            await asyncio.sleep(0.05)

        async def one():
            nonlocal failed
            async with sem:
                r = await c.post(url + "/v1/completions", json=body)
                failed += r.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - t0), failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    results = {}
    for name, http in (("httptools", "httptools"), ("h11-bounded", bounded_protocol(32768, 10))):
        server = serve(http, port := free_port())
        url = f"http://127.0.0.1:{port}"
        rps, failed = asyncio.run(drive(url, args.requests, args.concurrency))
        server.should_exit = True
        results[name] = {"requests_per_s": round(rps, 1), "failed": failed}
        print(f"{name:12} {rps:8.1f} req/s  failed {failed}")
    valid = all(r["failed"] == 0 for r in results.values()) and load_before <= os.cpu_count()
    out = {"valid": valid, "load_avg_before": round(load_before, 2), **vars(args), **results}
    if valid:
        ratio = results["h11-bounded"]["requests_per_s"] / results["httptools"]["requests_per_s"]
        out["h11_over_httptools"] = round(ratio, 3)
        print(f"h11-bounded / httptools: {ratio:.3f}")
    else:
        print("INVALID run (failed requests or a busy machine): no ratio")
    (ROOT / "bench" / "results" / "http_parsers.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

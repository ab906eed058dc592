"""`python -m reliability.soak [--write] [SECONDS]`: mixed traffic for 10 minutes (or SECONDS)
through nginx onto two replicas: valid requests (SDK and raw, streaming and not), invalid ones,
clients that vanish, and a caller over its rate limit. Then: counts by status (no 5xx), memory of
each replica's process tree (growth under 10 %), and nothing leaked (no request left in the
engine, every concurrency slot free). With --write the figures go to docs/RELIABILITY.md.
"""

import argparse
import asyncio
import os
import random
import re
import sys
import time
from collections import Counter

import httpx
import openai

from reliability import doc
from reliability.scenarios import Result, engines_idle, exactly_slots_admitted, wait_until
from reliability.sdk_traffic import raw_request, sdk_request, vanish
from reliability.stress import LONG
from reliability.topology import CLIENT_KEY, LIMITED_KEY, Topology

WORKERS = 6  # requests in flight at once, besides the rate-limited caller
WARMUP = 15.0  # s of the same traffic before the first memory reading (first allocations)
LIMITED_EVERY = 1.5  # s between the rate-limited caller's requests: ~40/min against rpm=20
INVALID = [  # (body, status a correct server answers)
    ({"model": "shakespeare", "prompt": "x", "max_tokens": -1}, 400),
    ({"model": "no-such-model", "prompt": "x", "max_tokens": 4}, 404),
    ({"model": "shakespeare", "prompt": "x", "max_tokens": 4, "temperature": "hot"}, 400),
    ({"model": "shakespeare", "prompt": "x" * 500, "max_tokens": 4}, 400),  # over the context
]
WEIGHTS = {"sdk": 3, "sdk stream": 3, "raw": 2, "raw stream": 2, "invalid": 2, "vanish": 2}


class Soak:
    def __init__(self, topo: Topology, seconds: float):
        self.topo, self.seconds = topo, seconds
        self.counts: Counter = Counter()  # (kind, status) -> n
        self.incomplete = 0  # 200s that did not complete: lost

    async def _valid(self, kind: str, raw: httpx.AsyncClient, sdk: openai.AsyncOpenAI) -> str:
        stream = kind.endswith("stream")
        if kind.startswith("sdk"):
            o = await sdk_request(sdk, self.topo.model, stream, 32, {})
        else:
            o = await raw_request(raw, self.topo.nginx.url, self.topo.model, stream, 32, {})
        self.incomplete += o.lost
        return o.status

    async def _invalid(self, raw: httpx.AsyncClient) -> str:
        payload, want = random.choice(INVALID)
        payload = {**payload, "model": payload["model"].replace("shakespeare", self.topo.model)}
        r = await raw.post(self.topo.nginx.url + "/v1/completions", json=payload)
        return str(r.status_code) + ("" if r.status_code == want else f" (want {want})")

    async def worker(self, until: float) -> None:
        auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        async with (
            httpx.AsyncClient(timeout=60, headers=auth) as raw,
            openai.AsyncOpenAI(
                base_url=self.topo.nginx.url + "/v1", api_key=CLIENT_KEY, timeout=60
            ) as sdk,
        ):
            while time.monotonic() < until:
                kind = random.choices(kinds, weights)[0]
                if kind == "invalid":
                    status = await self._invalid(raw)
                elif kind == "vanish":
                    status = await vanish(
                        self.topo.nginx.url, self.topo.model, random.randrange(2), LONG
                    )
                else:
                    status = await self._valid(kind, raw, sdk)
                self.counts[(kind, status)] += 1

    async def limited(self, until: float) -> None:
        """A caller over its rpm: 429s with Retry-After, never anything else."""
        auth = {"Authorization": f"Bearer {LIMITED_KEY}"}
        async with httpx.AsyncClient(timeout=60, headers=auth) as c:
            while time.monotonic() < until:
                o = await raw_request(c, self.topo.nginx.url, self.topo.model, False, 8, {})
                self.counts[("rate-limited caller", o.status)] += 1
                await asyncio.sleep(LIMITED_EVERY)

    async def run(self) -> Result:
        r = Result("soak", f"Soak: {self.seconds:.0f} s of mixed traffic on two replicas")
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        until = t0 + self.seconds
        tasks = [asyncio.create_task(self.worker(until)) for _ in range(WORKERS)]
        tasks.append(asyncio.create_task(self.limited(until)))
        await asyncio.sleep(min(WARMUP, self.seconds / 4))
        rss0 = {n: rep.rss_mib() for n, rep in self.topo.replicas.items()}
        await asyncio.gather(*tasks)
        idle = await wait_until(lambda: engines_idle(*self.topo.replicas.values()), 10)
        rss1 = {n: rep.rss_mib() for n, rep in self.topo.replicas.items()}
        self.report(r, rss0, rss1, idle)
        r.figures["slots"] = await exactly_slots_admitted(self.topo, r)
        r.figures["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        return r

    def report(self, r: Result, rss0: dict, rss1: dict, idle: float | None) -> None:
        by_kind: dict[str, dict] = {}
        for (kind, status), n in sorted(self.counts.items()):
            by_kind.setdefault(kind, {})[status] = n
        r.figures["requests"] = sum(self.counts.values())
        r.figures["by_kind"] = by_kind
        fives = sum(n for (_, s), n in self.counts.items() if re.search(r"\b5\d\d\b", s))
        r.check(f"5xx answers: {fives} (must be 0)", fives == 0)
        wrong = sum(n for (_, s), n in self.counts.items() if "want" in s)
        r.check(f"invalid requests answered with the wrong status: {wrong}", wrong == 0)
        r.check(f"lost requests: {self.incomplete} (must be 0)", self.incomplete == 0)
        limited = by_kind.get("rate-limited caller", {})
        r.check(
            f"the caller over its rpm got 200 and 429 only: {limited}",
            set(limited) <= {"200", "429"} and "429" in limited,
        )
        for name in rss0:
            growth = 100 * (rss1[name] - rss0[name]) / rss0[name]
            r.figures[f"rss_mib_{name}"] = [round(rss0[name]), round(rss1[name]), round(growth, 1)]
            r.check(
                f"replica {name} memory (its process tree) {rss0[name]:.0f} → {rss1[name]:.0f} "
                f"MiB: {growth:+.1f} % (under 10 %)",
                growth < 10,
            )
        r.check(f"no request left in either engine (idle after {idle} s)", idle is not None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser("python -m reliability.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("seconds", nargs="?", type=float, default=600.0, help="default 600")
    ap.add_argument("--write", action="store_true", help="record figures, rewrite the doc")
    args = ap.parse_args(argv)
    shortened = "" if args.seconds == 600 else f" {args.seconds:g}"
    when = doc.stamp("python -m reliability.soak --write" + shortened)
    t0 = time.monotonic()
    with Topology() as topo:
        result = asyncio.run(Soak(topo, args.seconds).run())
    result.seconds = round(time.monotonic() - t0, 1)
    for claim, ok in result.claims:
        print(f"{'ok  ' if ok else 'FAIL'} {claim}")
    print(result.figures)
    if args.write:
        doc.record([result], {"wall_seconds": result.seconds}, when)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())

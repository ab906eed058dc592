"""One replica under stress, addressed directly (no nginx, no retries): a burst beyond its
admission backlog, deadlines, and a storm of clients that vanish. Each checks afterwards that
nothing is left inside the engine (vLLM's running + waiting back to 0)."""

import asyncio
import time

import httpx

from reliability.scenarios import Result, engines_idle, needs, wait_until
from reliability.sdk_traffic import percentile, raw_request, tally, vanish
from reliability.topology import CLIENT_KEY, Topology

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
STRESSED = "b"  # the replica these scenarios address (the other may be restarting meanwhile)
BACKLOG = 16  # --max-queued-requests of the stressed replica (the runner starts it so)
LONG = 120  # tokens: nearly the demo's whole context


def stress_flags(flags: set[str]) -> list[str]:
    """The stressed replica's flags: a small backlog and a small batch, so that queues form."""
    out = ["--max-num-seqs", "4"]
    if "--max-queued-requests" in flags:
        out += ["--max-queued-requests", str(BACKLOG)]
    return out


async def burst(
    url: str,
    model: str,
    n: int,
    max_tokens: int,
    headers: dict | None = None,
) -> list:
    """`n` raw requests at once, streams and not alternating."""
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=120, headers=AUTH, limits=limits) as c:
        return await asyncio.gather(
            *(raw_request(c, url, model, i % 2 == 1, max_tokens, headers or {}) for i in range(n))
        )


async def admission_burst(topo: Topology, name: str = STRESSED) -> Result:
    n = 10 * BACKLOG
    r = Result("admission", f"Admission burst: {n} requests at once, backlog {BACKLOG}")
    if not needs(topo, r, "--max-queued-requests"):
        return r
    rep = topo.replicas[name]
    before = rep.metrics()
    got = await burst(rep.url, topo.model, n, 64)
    idle = await wait_until(lambda: engines_idle(rep), 10)
    after = rep.metrics()
    r.figures["load"] = t = tally(got)
    statuses = set(t["statuses"])
    r.check(f"only 200 and 503: {t['statuses']}", statuses <= {"200", "503"})
    refused = [o for o in got if o.status == "503"]
    r.check(
        f"every 503 ({len(refused)}) is server_overloaded with Retry-After and retry-after-ms",
        all(o.code == "server_overloaded" and o.retry_after and o.retry_after_ms for o in refused),
    )
    ok = [o for o in got if o.status == "200"]
    r.check(
        f"every 200 ({len(ok)}) complete: 64 tokens, finish_reason length, stream [DONE]",
        all(o.ok and o.tokens == 64 and o.finish_reason == "length" for o in ok),
    )
    engine_seen = after.get("vllm:request_success_total", 0) - before.get(
        "vllm:request_success_total", 0
    )
    r.figures["engine_requests"] = engine_seen
    r.check(
        f"the refused never reached the engine: it finished {engine_seen:.0f} = the 200s",
        engine_seen == len(ok),
    )
    r.figures["refusal_p95_s"] = percentile([o.seconds for o in refused], 0.95)
    r.figures["idle_after_s"] = idle
    r.check(f"engine running + waiting back to 0 (after {idle} s)", idle is not None)
    return r


async def deadlines(topo: Topology, name: str = STRESSED) -> Result:
    """X-Request-Timeout: too long in the queue -> 503 queue_timeout; too long generating ->
    200 with the text so far and finish_reason "timeout", the engine request aborted."""
    r = Result("deadlines", "Deadlines (X-Request-Timeout)")
    if not needs(topo, r, "--request-timeout"):
        return r
    rep = topo.replicas[name]
    # Generating too long. Every deadline is timed on this machine now, on the very pair it
    # then cuts short (a plain request and a stream, together): halfway through the pair's
    # whole generation, and never before 3x the stream's first event, so a slow first token on
    # a busy CPU is not mistaken for a queue timeout.
    probe = await burst(rep.url, topo.model, 2, LONG)
    whole = max(o.seconds for o in probe)
    first = next(o.first_s for o in probe if o.stream) or whole
    deadline = round(max(whole / 2, 3 * first), 3)
    r.figures |= {"pair_whole_s": round(whole, 3), "stream_first_event_s": round(first, 3)}
    r.figures["generation_deadline_s"] = deadline
    slow = await burst(rep.url, topo.model, 2, LONG, {"X-Request-Timeout": str(deadline)})
    r.figures["generating"] = [
        {"stream": o.stream, "status": o.status, "finish_reason": o.finish_reason,
         "tokens": o.tokens, "seconds": round(o.seconds, 2)}
        for o in slow
    ]  # fmt: skip
    r.check(
        "generating past the deadline: 200, finish_reason timeout, the text so far "
        f"({[o.tokens for o in slow]} of {LONG} tokens)",
        all(
            o.status == "200" and o.finish_reason == "timeout" and 0 < (o.tokens or 0) < LONG
            and len(o.text) == o.tokens
            for o in slow
        ),
    )  # fmt: skip
    idle = await wait_until(lambda: engines_idle(rep), 5)
    r.check(f"the engine request was aborted (engine idle after {idle} s)", idle is not None)
    # Waiting too long. The batch (--max-num-seqs 4) fills with 14 long streams: 4 run, 10
    # wait, three batches' worth (with the 2 late ones the backlog, BACKLOG = 16, is just full:
    # what they get can only be about their deadline). Once 4 streams have their first token
    # the rest surely wait; the late ones then get 0.1 s to start, and wait behind 10 others.
    # (On 2 cores shared by two replicas, the late ones reached the replica up to 1.1 s after
    # they were sent, when one batch behind them was all there was; the engine's own gauge,
    # polled, came too late too.)
    started, full = 0, asyncio.Event()

    def one_started() -> None:
        nonlocal started
        started += 1
        if started >= 4:  # the batch
            full.set()

    patience = 0.1
    wait = {"X-Request-Timeout": str(patience)}
    n = BACKLOG - 2
    # the late ones' client exists beforehand: making one (its TLS context) once took 1.4 s
    # of this process's time, and the batch was done before they were sent
    async with (
        httpx.AsyncClient(timeout=120, headers=AUTH, limits=httpx.Limits(max_connections=n)) as f,
        httpx.AsyncClient(timeout=120, headers=AUTH) as c,
    ):
        t0 = time.monotonic()
        fill = asyncio.gather(
            *(raw_request(f, rep.url, topo.model, True, LONG, {}, one_started) for _ in range(n))
        )
        async with asyncio.timeout(30):
            await full.wait()
        r.figures["batch_full_after_s"] = round(time.monotonic() - t0, 3)
        late = await asyncio.gather(
            *(raw_request(c, rep.url, topo.model, i == 1, 8, wait) for i in range(2))
        )
        filled = await fill
        r.figures["batch_done_after_s"] = round(time.monotonic() - t0, 3)
    r.figures["queued"] = [
        {"stream": o.stream, "status": o.status, "code": o.code, "seconds": round(o.seconds, 2)}
        for o in late
    ]
    r.figures["queue_deadline_s"] = patience
    r.check(
        "waiting in the queue past the deadline: 503 queue_timeout with Retry-After "
        f"({[(o.status, o.code) for o in late]})",
        all(o.status == "503" and o.code == "queue_timeout" and o.retry_after for o in late),
    )
    r.check(
        f"the requests ahead of them were untouched: {sum(o.ok for o in filled)} of {n} "
        f"complete, {[o.tokens for o in filled]} of {LONG} tokens",
        all(o.ok and o.tokens == LONG and o.finish_reason == "length" for o in filled),
    )
    idle = await wait_until(lambda: engines_idle(rep), 10)
    r.check(f"engine running + waiting back to 0 (after {idle} s)", idle is not None)
    return r


async def disconnect_storm(topo: Topology, name: str = STRESSED, clients: int = 200) -> Result:
    r = Result("disconnect", f"Disconnect storm: {clients} clients vanish mid-stream and mid-queue")
    rep = topo.replicas[name]
    gate = asyncio.Semaphore(50)  # at most 50 connections at a time

    async def one(i: int) -> str:
        async with gate:
            return await vanish(rep.url, topo.model, i, LONG)

    t0 = time.monotonic()
    what = await asyncio.gather(*(one(i) for i in range(clients)))
    r.figures["storm_seconds"] = round(time.monotonic() - t0, 1)
    r.figures["clients"] = {k: what.count(k) for k in sorted(set(what))}
    busy_at_end = rep.engine_busy()
    idle = await wait_until(lambda: engines_idle(rep), 10)
    r.figures |= {"engine_busy_when_last_left": busy_at_end, "idle_after_s": idle}
    r.check(
        f"engine running + waiting back to 0 within 1.5 s of the last client leaving ({idle} s)",
        idle is not None and idle <= 1.5,
    )
    unfinished = rep.metrics().get("nanoserve_engine_requests_unfinished")
    r.check(f"nanoserve_engine_requests_unfinished = {unfinished}", unfinished == 0)
    after = await burst(rep.url, topo.model, 2, 16)
    r.check("the replica serves normally afterwards", all(o.ok for o in after))
    return r

"""Faults in the two-replica deployment, each under load through nginx: Redis goes away, a
replica is killed, its engine dies (reliability/lifecycle.py has the replicas that leave on
purpose).
Each scenario returns a Result: its figures and the claims it checked, pass or fail.

Each one leaves the topology as it found it, except where its name says otherwise (a killed
replica stays down until the runner's `heal`), so the runner can order them freely.
"""

import asyncio
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from reliability.sdk_traffic import Load, Outcome, raw_request, tally
from reliability.topology import CLIENT_KEY, SLOTS, SLOTS_KEY, Replica, Topology

GRACE = 30  # s: --graceful-shutdown-timeout's default, what a drain may take
# s: after the drain, the engine processes get up to 10 s to end before vLLM kills them
# (vllm_adapter.EXIT_SECONDS), and the process then exits; on this VM freeing an engine's memory
# alone took 5-9 s. The Kubernetes manifest's terminationGracePeriodSeconds (60) covers
# preStop (10) + GRACE + ENGINE_STOP.
ENGINE_STOP = 20


@dataclass
class Result:
    name: str
    title: str
    figures: dict = field(default_factory=dict)
    claims: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None  # why it could not run here

    def check(self, claim: str, ok: bool) -> bool:
        self.claims.append((claim, bool(ok)))
        return bool(ok)

    @property
    def passed(self) -> bool:
        return self.skipped is None and all(ok for _, ok in self.claims)


def needs(topo: Topology, result: Result, *flags: str) -> bool:
    """False (and the result says why) if this checkout's server lacks a flag."""
    missing = [f for f in flags if f not in topo.flags]
    if missing:
        result.skipped = f"the server has no {', '.join(missing)} yet"
    return not missing


async def wait_until(probe, timeout: float, every: float = 0.05) -> float | None:
    """Seconds until `probe()` was true, or None at the deadline."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await asyncio.to_thread(probe):
            return round(time.monotonic() - t0, 2)
        await asyncio.sleep(every)
    return None


def in_flight(rep: Replica) -> int:
    """Requests the replica is answering now, besides the /metrics request that asks."""
    return int(rep.metrics().get("nanoserve_requests_in_flight", 1)) - 1


async def strike_when_busy(rep: Replica, at_least: int = 3, timeout: float = 20) -> int:
    """Wait (bounded) until `rep` has `at_least` requests in flight, so that a fault lands
    mid-request; how many it had."""
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < timeout:
        n = await asyncio.to_thread(in_flight, rep)
        if n >= at_least:
            break
        await asyncio.sleep(0.02)
    return n


def engines_idle(*replicas: Replica) -> bool:
    return all(r.engine_busy() == 0 for r in replicas)


def explain_502s(r: Result, outcomes: list[Outcome]) -> None:
    """nginx's own 502s get a note saying where they come from."""
    if any(o.status == "502" for o in outcomes):
        r.notes.append(
            "The 502s are nginx's own: every replica it tried for that request failed, the "
            "last one by refusing the connection (stopped, or restarting), so it had no "
            "replica's answer to pass on. (A replica that answers 503 is never taken out of "
            "rotation: `max_fails=0` in deploy/nginx/nginx.conf.)"
        )


def lost_and_failures(r: Result, load: dict, *, sdk: bool = True, raw: bool = True) -> None:
    r.check(f"lost requests: {load['lost']} (must be 0)", load["lost"] == 0)
    if sdk:
        r.check(f"failures the SDK saw: {load['sdk_failures']}", load["sdk_failures"] == 0)
    if raw:
        raw_fail = sum(v["failures"] for k, v in load["by_client"].items() if k.startswith("raw"))
        r.check(f"failures the raw client (no retries) saw: {raw_fail}", raw_fail == 0)


async def direct(replica: Replica, n: int, model: str, key: str = CLIENT_KEY, **kw) -> list:
    """`n` raw requests at once straight to one replica (no nginx, no retries)."""
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=60, headers=auth) as c:
        args = (kw.get("stream", False), kw.get("max_tokens", 32), kw.get("headers", {}))
        return await asyncio.gather(*(raw_request(c, replica.url, model, *args) for _ in range(n)))


async def redis_outage(topo: Topology) -> Result:
    """Redis stops mid-load, then comes back on the same port: fail closed (503 + Retry-After
    on both replicas), recovery without restarting them, no concurrency slot leaked."""
    r = Result("redis", "Redis outage (fail closed) and recovery")
    starts = {n: rep.starts for n, rep in topo.replicas.items()}
    # one client fewer than the caller's slots: at exactly its limit, a request sent the moment
    # the previous answer arrived can beat that answer's slot release to Redis (a 429 that has
    # nothing to do with an outage; seen once, at a load average of 25)
    load = Load(topo.nginx.url, topo.model, n=48, concurrency=SLOTS - 1, key=SLOTS_KEY)
    task = asyncio.create_task(load.run())
    await load.reached(12)
    await asyncio.to_thread(topo.redis.stop)
    # straight to each replica, as a caller with a limit (one without any never asks Redis)
    outage = await asyncio.gather(
        *(direct(rep, 2, topo.model, SLOTS_KEY) for rep in topo.replicas.values())
    )
    await asyncio.sleep(2)
    await asyncio.to_thread(topo.redis.start)
    back = await wait_until(lambda: _one_ok(topo.nginx.url, topo.model), 30, every=0.2)
    r.figures["served_through_nginx_after_s"] = back
    await task
    r.figures["load"] = t = tally(load.outcomes)
    r.check(f"lost requests: {t['lost']} (must be 0)", t["lost"] == 0)
    refused = [o for o in load.outcomes if not o.ok]
    got = dict(Counter(f"{o.status} {o.code}" for o in refused))
    r.check(
        f"every request refused during the outage was a 503 with Retry-After: {got}",
        all(o.status == "503" and o.retry_after for o in refused),
    )
    explain_502s(r, load.outcomes)
    answers = [(o.status, o.retry_after) for per in outage for o in per]
    r.figures["direct_during_outage"] = [f"{s} retry-after={ra}" for s, ra in answers]
    r.check(
        "both replicas answer 503 + Retry-After while Redis is down",
        all(s == "503" and ra for s, ra in answers),
    )
    after = await direct(topo.replicas["a"], 1, topo.model, SLOTS_KEY)
    after += await direct(topo.replicas["b"], 1, topo.model, SLOTS_KEY)
    r.check(
        f"through nginx, requests succeed again {back} s after Redis is back",
        back is not None,
    )
    r.check(
        "requests succeed again on both replicas once Redis is back",
        all(o.ok for o in after),
    )
    r.check(
        "no replica was restarted",
        starts == {n: rep.starts for n, rep in topo.replicas.items()}
        and all(rep.alive for rep in topo.replicas.values()),
    )
    r.figures["slots"] = await exactly_slots_admitted(topo, r)
    return r


def _one_ok(url: str, model: str) -> bool:
    """One request with a Redis-counted limit (the `slots` caller) answered 200."""
    auth = {"Authorization": f"Bearer {SLOTS_KEY}"}
    payload = {"model": model, "prompt": "x", "max_tokens": 2}
    return httpx.post(url + "/v1/completions", json=payload, headers=auth, timeout=30).is_success


async def exactly_slots_admitted(topo: Topology, r: Result) -> dict:
    """SLOTS + 2 concurrent requests of the `slots` caller: SLOTS admitted, 2 refused (429). A
    slot still held (leaked) admits fewer; a release counted twice (after Redis lost its state)
    admits more. Background releases may still be running: retried for a few seconds."""
    statuses: dict = {}
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20:
        got = await direct_via(topo.nginx.url, SLOTS + 2, topo.model, SLOTS_KEY, max_tokens=100)
        statuses = {s: sum(o.status == s for o in got) for s in {o.status for o in got}}
        if statuses.get("200") == SLOTS and statuses.get("429") == 2:
            break
        await asyncio.sleep(1)
    r.check(
        f"no slot leaked: {SLOTS + 2} concurrent requests of a concurrency={SLOTS} key "
        f"admit exactly {SLOTS} ({statuses})",
        statuses.get("200") == SLOTS and statuses.get("429") == 2,
    )
    return {"statuses": statuses, "seconds_to_settle": round(time.monotonic() - t0, 1)}


async def direct_via(url: str, n: int, model: str, key: str, **kw) -> list[Outcome]:
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=60, headers=auth) as c:
        return await asyncio.gather(
            *(raw_request(c, url, model, False, kw.get("max_tokens", 32), {}) for _ in range(n))
        )


async def replica_killed(topo: Topology, name: str = "a") -> Result:
    """SIGKILL to a whole replica (its process group: server and engine core, as when a
    container or node dies) mid-load. It stays down: the runner heals it."""
    r = Result("sigkill", f"Replica {name} killed (SIGKILL) mid-load")
    rep = topo.replicas[name]
    load = Load(topo.nginx.url, topo.model, n=96, concurrency=6, max_tokens=64)
    task = asyncio.create_task(load.run())
    await load.reached(24)
    busy = await strike_when_busy(rep)
    rep.server.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(rep.stop, 5)  # what the kill left of its group
    await task
    r.figures["load"] = tally(load.outcomes)
    explain_502s(r, load.outcomes)
    r.figures["in_flight_on_killed_replica"] = busy
    plain = [o for o in load.outcomes if not o.stream]
    r.check(
        f"non-streaming requests lost or failed: {sum(not o.ok for o in plain)} of {len(plain)}"
        " (SDK and raw client alike: nginx retried them on the other replica)",
        all(o.ok for o in plain),
    )
    cut = [o for o in load.outcomes if o.stream and not o.ok]
    r.check(
        f"streams that failed ({len(cut)}) were cut mid-flight (accepted, then no [DONE]), at "
        f"most the {busy} requests in flight on the killed replica",
        all(o.status == "cut" for o in cut) and len(cut) <= busy,
    )
    r.figures["streams_cut"] = len(cut)
    r.notes.append(
        f"{len(cut)} stream(s) were cut mid-flight by the kill: their tokens had been delivered, "
        "so neither nginx nor the SDK can retry them transparently; the client sees a broken "
        "stream (no `[DONE]`) and must resend. Non-streaming requests in flight on the killed "
        "replica had sent no byte yet, so nginx retried them on the other replica."
    )
    return r


async def engine_death(topo: Topology, name: str = "a") -> Result:
    """The engine core of one replica is killed mid-load: its streams end with an error event,
    /ready turns 503, it exits non-zero within seconds, retries land on the other replica."""
    r = Result("engine", f"Engine core of replica {name} killed mid-load")
    rep = topo.replicas[name]
    load = Load(topo.nginx.url, topo.model, n=96, concurrency=6, max_tokens=64)
    task = asyncio.create_task(load.run())
    await load.reached(24)
    core = rep.engine_core()
    r.figures["in_flight_at_death"] = await strike_when_busy(rep)
    t0 = time.monotonic()
    core.send_signal(signal.SIGKILL)
    to_503 = await wait_until(lambda: rep.ready_status() in (503, None), 15)
    saw_503 = rep.ready_status() == 503 or to_503 is not None
    code = await asyncio.to_thread(rep.server.proc.wait, 60)
    exit_s = round(time.monotonic() - t0, 2)
    await task
    await asyncio.to_thread(rep.stop, 5)
    r.figures["load"] = tally(load.outcomes)
    explain_502s(r, load.outcomes)
    r.figures |= {"ready_503_after_s": to_503, "exit_code": code, "exit_seconds": exit_s}
    ended = [o for o in load.outcomes if o.lost]
    with_error = [o for o in ended if o.status == "200" and o.code]
    r.figures["streams_ended_by_error_event"] = len(with_error)
    # a kill that caught no stream proves nothing about streams: at least one must be in it
    r.check(
        f"every stream the death interrupted ended with an error event ({len(with_error)} of "
        f"{len(ended)}; at least one needed), none was cut",
        0 < len(with_error) == len(ended),
    )
    plain = [o for o in load.outcomes if not o.stream]
    r.check(
        f"non-streaming requests failed: {sum(not o.ok for o in plain)} (retried on the other)",
        all(o.ok for o in plain),
    )
    ended_ids = {id(o) for o in with_error}
    other = [o for o in load.outcomes if not o.ok and id(o) not in ended_ids]
    r.check(
        f"no other failure, SDK or raw client: {[f'{o.label} {o.status} {o.code}' for o in other]}",
        not other,
    )
    r.check(f"/ready answered 503 within {to_503} s", saw_503 and to_503 is not None)
    r.check(
        f"exit code {code} (non-zero) after {exit_s} s (within {GRACE} s)",
        code not in (0, None) and exit_s < GRACE,
    )
    r.notes.append(
        "Streams in flight on the dead engine had delivered tokens: they end with an error "
        "event then `[DONE]` (counted as lost above: accepted, not completed), and the client "
        "resends."
    )
    return r

"""A replica leaving on purpose, under load through nginx: stopped with SIGTERM (it drains
and exits 0), and a rolling model update that replaces both replicas, one at a time, while
clients of the alias and of a pinned version keep sending."""

import asyncio
import datetime
import json
import re
import signal
import time

from reliability.scenarios import (
    ENGINE_STOP,
    GRACE,
    Result,
    explain_502s,
    lost_and_failures,
    needs,
    strike_when_busy,
)
from reliability.sdk_traffic import Load, tally
from reliability.topology import CLIENT_KEY, Topology


async def replica_stopped(topo: Topology, name: str = "b") -> Result:
    """SIGTERM mid-load: in-flight requests on it finish, new ones go to the other replica, it
    drains within --graceful-shutdown-timeout and exits 0 once vLLM has stopped its engine.
    The replica stays down."""
    r = Result("sigterm", f"Replica {name} stopped (SIGTERM) mid-load")
    rep = topo.replicas[name]
    load = Load(topo.nginx.url, topo.model, n=96, concurrency=6, max_tokens=64)
    task = asyncio.create_task(load.run())
    await load.reached(24)
    kept = KeptConnection(rep.port)
    await kept.open()  # opened before the signal, kept alive
    busy = await strike_when_busy(rep)
    t0, signalled = time.monotonic(), datetime.datetime.now()
    rep.server.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    work = {"model": topo.model, "prompt": "x", "max_tokens": 4}
    r.figures["request_on_open_connection"] = await kept.request("POST", "/v1/completions", work)
    kept.close()
    r.figures["new_connection"] = await _new_connection(rep.port)
    code = await asyncio.to_thread(rep.server.proc.wait, 90)
    exit_s = round(time.monotonic() - t0, 2)
    await task
    await asyncio.to_thread(rep.stop, 5)
    r.figures["load"] = t = tally(load.outcomes)
    explain_502s(r, load.outcomes)
    r.figures |= {"in_flight_at_sigterm": busy, "exit_code": code, "exit_seconds": exit_s}
    # where the time went, from the replica's own log: the drain (uvicorn waiting for open
    # requests), then vLLM stopping its engine processes, then the process exiting
    drained = _logged_at(rep.server.log(), "Waiting for application shutdown.")
    stopped = _logged_at(rep.server.log(), "Application shutdown complete.")
    if drained and stopped:
        r.figures["drain_seconds"] = round((drained - signalled).total_seconds(), 2)
        r.figures["engine_stop_seconds"] = round((stopped - drained).total_seconds(), 2)
    lost_and_failures(r, t)
    cut = sum(o.status == "cut" for o in load.outcomes)
    r.check(f"streams cut: {cut} (every in-flight stream completes)", cut == 0)
    r.check(
        f"new connections are refused at once: {r.figures['new_connection']}",
        r.figures["new_connection"] == "refused",
    )
    on_open = r.figures["request_on_open_connection"]
    r.check(
        "a request on a connection opened before SIGTERM gets 503 + Retry-After or a closed "
        f"connection, both of which nginx retries elsewhere: {on_open}",
        on_open in ("503 Retry-After", "closed"),
    )
    r.check(f"exit code {code} (must be 0)", code == 0)
    drain = r.figures.get("drain_seconds")
    r.check(
        f"drained in {drain} s, within --graceful-shutdown-timeout ({GRACE} s)",
        drain is not None and drain < GRACE,
    )
    r.check(
        f"exited in {exit_s} s, within --graceful-shutdown-timeout + {ENGINE_STOP} s for the "
        "engine to stop (what terminationGracePeriodSeconds must cover)",
        exit_s < GRACE + ENGINE_STOP,
    )
    return r


def _logged_at(log: str, message: str) -> datetime.datetime | None:
    """When a JSON log line with this message was written (the replica's clock = ours)."""
    for line in log.splitlines():
        if f'"message": "{message}"' in line:
            return datetime.datetime.strptime(json.loads(line)["time"], "%Y-%m-%d %H:%M:%S,%f")
    return None


class KeptConnection:
    """One raw keep-alive HTTP/1.1 connection to a replica, to see what a request sent on an
    already-open connection gets once it drains (httpx would quietly open a new one)."""

    def __init__(self, port: int):
        self.port = port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert (await self.request("GET", "/live")).startswith("200")

    async def request(self, method: str, path: str, payload: dict | None = None) -> str:
        """ "200", "503 Retry-After", or "closed" (the replica closed the connection)."""
        data = json.dumps(payload or {}).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        head += f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\n"
        self.writer.write(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
        try:
            await self.writer.drain()
            status = await asyncio.wait_for(self.reader.readline(), 30)
            headers = (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)).lower()
        except (ConnectionError, asyncio.IncompleteReadError):
            return "closed"
        if not status:
            return "closed"
        length = int(re.search(rb"content-length: (\d+)", headers).group(1))
        await self.reader.readexactly(length)
        code = status.split()[1].decode()
        return code + (" Retry-After" if b"retry-after:" in headers else "")

    def close(self) -> None:
        self.writer.close()


async def _new_connection(port: int) -> str:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return "refused"
    writer.close()
    return "accepted"


async def rolling_update(topo: Topology) -> Result:
    """Replace each replica in turn by `shakespeare-v2` (alias `shakespeare`) while clients of
    the alias and clients pinning `shakespeare-v1` keep sending."""
    r = Result("rolling", "Rolling model update, v1 to v2, one replica at a time")
    if not needs(topo, r, "--model-alias"):
        return r
    done = asyncio.Event()
    # paced: engine starts are CPU-bound, and a flood from the clients would slow them
    args = {"n": 5000, "stop": done, "pause": 0.25, "deadline": 1200}
    alias = Load(topo.nginx.url, "shakespeare", concurrency=4, **args)
    pinned = Load(topo.nginx.url, "shakespeare-v1", concurrency=2, **args)
    tasks = [asyncio.create_task(alias.run()), asyncio.create_task(pinned.run())]
    await alias.reached(12)
    t0 = time.monotonic()
    before_last = 0  # pinned requests finished while a v1 replica was still up
    for name, rep in topo.replicas.items():
        before_last = pinned.finished()
        r.figures[f"exit_code_{name}_v1"] = await asyncio.to_thread(rep.stop, 60)
        r.figures[f"processes_gone_{name}_v1_s"] = rep.gone_s  # after the exit
        rep.model_args = topo.model_args("shakespeare-v2")
        rep.start()
        await asyncio.to_thread(rep.wait_ready)
    r.figures["roll_seconds"] = round(time.monotonic() - t0, 1)
    r.check(
        f"each v1 replica exited 0 after draining ({r.figures['exit_code_a_v1']}, "
        f"{r.figures['exit_code_b_v1']})",
        r.figures["exit_code_a_v1"] == 0 and r.figures["exit_code_b_v1"] == 0,
    )
    n_pinned = pinned.finished()
    await pinned.reached(n_pinned + 4)
    done.set()
    await asyncio.gather(*tasks)
    r.figures["alias"] = t = tally(alias.outcomes)
    explain_502s(r, alias.outcomes + pinned.outcomes)
    r.figures["pinned"] = tally(pinned.outcomes)
    lost_and_failures(r, t)
    models = sorted({o.model for o in alias.outcomes if o.ok})
    r.check(
        f"alias clients were served {models}", set(models) <= {"shakespeare-v1", "shakespeare-v2"}
    )
    served = [o for o in pinned.outcomes if o.status == "200"]
    r.check(
        f"pinned clients: every 200 ({len(served)}) came from shakespeare-v1, never v2",
        all(o.model == "shakespeare-v1" for o in served),
    )
    tail = pinned.outcomes[n_pinned:]
    r.check(
        f"pinned clients after the roll: 404 model_not_found ({len(tail)} requests)",
        bool(tail) and all(o.status == "404" and o.code == "model_not_found" for o in tail),
    )
    early = pinned.outcomes[:before_last]
    r.check(
        f"pinned clients got v1 while a replica served it ({len(early)} requests, "
        f"{sum(not o.ok for o in early)} not 200)",
        all(o.ok for o in early),
    )
    return r

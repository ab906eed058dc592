"""The load the reliability scenarios send: the `openai` SDK with its default retries (what most
users run) and a raw HTTP client that never retries (it shows what the SDK hides), streaming and
not, side by side. Every load has a fixed number of requests and every request a timeout.

A request is *accepted* once its 200 arrived (for a stream: its headers, which nanoserve sends
with the first event); it is *lost* if it was accepted but never completed: no finish_reason,
text shorter than the tokens counted, or a stream that ended without `[DONE]` or with an error
event. Lost requests are the failures no retry can hide.
"""

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import openai

from reliability.topology import CLIENT_KEY

PROMPT = "ROMEO:"
MAX_TOKENS = 32  # the demo's context is 128 tokens
REQUEST_TIMEOUT = 60.0  # s; far above any request here, so a timeout means something hung
KINDS = (("sdk", False), ("raw", True), ("sdk", True), ("raw", False))  # (client, stream)


@dataclass
class Outcome:
    client: str  # "sdk" | "raw"
    stream: bool
    status: str = "?"  # HTTP status ("200", "503"), or how it broke ("cut", "ConnectError")
    seconds: float = 0.0
    first_s: float | None = None  # a stream's first event (raw client)
    accepted: bool = False
    completed: bool = False
    model: str | None = None
    finish_reason: str | None = None
    text: str = ""
    tokens: int | None = None
    code: str | None = None  # the OpenAI error code of a refusal or of a stream's error event
    retry_after: bool = False  # a refusal carried Retry-After (and `retry-after-ms`:)
    retry_after_ms: bool = False

    @property
    def label(self) -> str:
        return self.client + (" stream" if self.stream else "")

    @property
    def ok(self) -> bool:
        return self.status == "200" and self.completed

    @property
    def lost(self) -> bool:
        return self.accepted and not self.completed

    def finish(self) -> None:
        """Judge completeness from what arrived (one character per token: a char model)."""
        self.completed = (
            self.accepted
            and self.code is None
            and self.finish_reason not in (None, "error", "abort")
            and self.tokens is not None
            and len(self.text) == self.tokens
        )


def body(model: str, stream: bool, max_tokens: int) -> dict:
    b = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    if stream:
        b |= {"stream": True, "stream_options": {"include_usage": True}}
    return b


def _read_choice(o: Outcome, event: dict) -> None:
    o.model = event.get("model", o.model)
    for choice in event.get("choices") or []:
        o.text += choice.get("text") or ""
        o.finish_reason = choice.get("finish_reason") or o.finish_reason
    if event.get("usage"):
        o.tokens = event["usage"]["completion_tokens"]


def _refusal(o: Outcome, r: httpx.Response, content: bytes) -> None:
    o.retry_after = "retry-after" in r.headers
    o.retry_after_ms = "retry-after-ms" in r.headers
    try:
        o.code = json.loads(content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        o.code = None


async def raw_request(
    client: httpx.AsyncClient,
    url: str,
    model: str,
    stream: bool,
    max_tokens: int,
    headers: dict,
    on_first: Callable[[], None] | None = None,
) -> Outcome:
    """One request, no retry: what the network and nginx really answered. `on_first` is
    called when a stream's first event arrives (its request is in the engine's batch)."""
    o, t0 = Outcome("raw", stream), time.monotonic()
    try:
        req = client.build_request(
            "POST", url + "/v1/completions", json=body(model, stream, max_tokens), headers=headers
        )
        r = await client.send(req, stream=True)
        try:
            o.status = str(r.status_code)
            if r.status_code != 200:
                _refusal(o, r, await r.aread())
            elif not stream:
                o.accepted = True
                _read_choice(o, json.loads(await r.aread()))
            else:
                o.accepted = True
                done = False
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        done = True
                        break
                    event = json.loads(line[6:])
                    if o.first_s is None:
                        o.first_s = time.monotonic() - t0
                        if on_first is not None:
                            on_first()
                    if "error" in event:
                        o.code = event["error"].get("code") or event["error"].get("type")
                    _read_choice(o, event)
                if not done:
                    o.status = "cut"
        finally:
            await r.aclose()
    except httpx.TimeoutException:
        o.status = "timeout"
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        o.status = "cut" if o.accepted else type(e).__name__
    o.finish()
    o.seconds = time.monotonic() - t0
    return o


async def sdk_request(
    client: openai.AsyncOpenAI, model: str, stream: bool, max_tokens: int, headers: dict
) -> Outcome:
    """One request through the openai SDK (its retries included)."""
    o, t0 = Outcome("sdk", stream), time.monotonic()
    args = body(model, stream, max_tokens) | {"extra_headers": headers}
    try:
        r = await client.completions.create(**args)
        o.status, o.accepted = "200", True
        if not stream:
            _read_choice(o, r.model_dump())
        else:
            async for chunk in r:
                _read_choice(o, chunk.model_dump())
    except openai.APIStatusError as e:
        o.status, o.code = str(e.status_code), e.code
        o.retry_after = "retry-after" in e.response.headers
        o.retry_after_ms = "retry-after-ms" in e.response.headers
    except openai.APITimeoutError:
        o.status = "timeout"
    except openai.APIConnectionError as e:
        o.status = "cut" if o.accepted else type(e.__cause__ or e).__name__
    except openai.APIError as e:  # an error event inside a stream
        o.code = e.code or "error_event"
    o.finish()
    o.seconds = time.monotonic() - t0
    return o


@dataclass
class Load:
    """Up to `n` requests, `concurrency` at a time, cycling through KINDS (or `kinds`)."""

    url: str
    model: str
    n: int
    concurrency: int
    max_tokens: int = MAX_TOKENS
    kinds: tuple = KINDS
    headers: dict = field(default_factory=dict)
    key: str = CLIENT_KEY
    deadline: float = 300.0
    stop: asyncio.Event | None = None  # set: requests not yet sent are not sent
    pause: float = 0.0  # s each slot waits after a request: a steady trickle, not a flood
    outcomes: list[Outcome] = field(default_factory=list)

    def finished(self) -> int:
        return len(self.outcomes)

    async def reached(self, k: int, timeout: float = 120) -> None:
        """Wait until `k` requests have finished (how scenarios strike 'mid-load')."""
        t0 = time.monotonic()
        while self.finished() < k:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"only {self.finished()} of {k} requests finished")
            await asyncio.sleep(0.05)

    async def run(self) -> list[Outcome]:
        limits = httpx.Limits(max_connections=self.concurrency * 2)
        auth = {"Authorization": f"Bearer {self.key}"}
        async with (
            httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits, headers=auth) as raw,
            openai.AsyncOpenAI(
                base_url=self.url + "/v1", api_key=self.key, timeout=REQUEST_TIMEOUT
            ) as sdk,
        ):
            gate = asyncio.Semaphore(self.concurrency)

            async def one(i: int) -> None:
                client, stream = self.kinds[i % len(self.kinds)]
                async with gate:
                    if self.stop is not None and self.stop.is_set():
                        return
                    if client == "sdk":
                        o = await sdk_request(
                            sdk, self.model, stream, self.max_tokens, self.headers
                        )
                    else:
                        args = (raw, self.url, self.model, stream, self.max_tokens, self.headers)
                        o = await raw_request(*args)
                    await asyncio.sleep(self.pause)
                self.outcomes.append(o)

            await asyncio.wait_for(
                asyncio.gather(*(one(i) for i in range(self.n))), timeout=self.deadline
            )
        return self.outcomes


async def vanish(url: str, model: str, i: int, max_tokens: int) -> str:
    """One client that leaves: a stream after its first event, a plain request after a random
    0.05-1 s (queued, or generating). Its own connection, closed when it goes."""
    stream = i % 2 == 0
    patience = random.uniform(0.05, 1.0)
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient(timeout=patience, headers=auth) as c:
        try:
            payload = body(model, stream, max_tokens)
            req = c.build_request("POST", url + "/v1/completions", json=payload)
            r = await c.send(req, stream=True)
            if r.status_code != 200:
                await r.aclose()
                return f"refused {r.status_code}"
            if not stream:
                await r.aread()
                return "completed"
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    break
            await r.aclose()
            return "left mid-stream"
        except httpx.TimeoutException:
            return "left before its answer"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 3)


def tally(outcomes: list[Outcome]) -> dict:
    """The figures every scenario reports, overall and per client kind."""

    def figures(os_: list[Outcome]) -> dict:
        ok = [o.seconds for o in os_ if o.ok]
        return {
            "sent": len(os_),
            "statuses": dict(sorted(Counter(o.status for o in os_).items())),
            "failures": sum(not o.ok for o in os_),
            "lost": sum(o.lost for o in os_),
            "p50_s": percentile(ok, 0.5),
            "p95_s": percentile(ok, 0.95),
        }

    out = figures(outcomes)
    out["failed_examples"] = [  # what went wrong, for the reader of a failed run
        f"{o.label}: {o.status} {o.code or ''} finish={o.finish_reason} "
        f"tokens={o.tokens} chars={len(o.text)}"
        for o in outcomes
        if not o.ok
    ][:6]
    out["sdk_failures"] = sum(not o.ok for o in outcomes if o.client == "sdk")
    out["by_client"] = {
        label: figures([o for o in outcomes if o.label == label])
        for label in sorted({o.label for o in outcomes})
    }
    return out

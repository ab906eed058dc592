"""Reading a running server from outside: poll until something holds, its /metrics as numbers
(parsed by prometheus_client's own parser), and bursts of completions."""

import asyncio
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families


def wait_until(predicate, timeout: float, every: float = 0.1) -> bool:
    """Whether `predicate()` became true within `timeout` seconds (polled every `every` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def samples(text: str) -> dict[str, float]:
    """Every sample of a /metrics page, keyed as the page writes it: `name` or
    `name{label="value",...}` (labels in the page's order)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def summed(text: str) -> dict[str, float]:
    """Every sample name of a /metrics page, its values summed over labels."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def scrape(base_url: str, headers: dict | None = None, timeout: float = 30) -> str:
    """The /metrics page (a busy replica answers late: a long timeout by default)."""
    r = httpx.get(base_url + "/metrics", headers=headers, timeout=timeout)
    r.raise_for_status()
    return r.text


def completion(max_tokens: int = 5, stream: bool = False, prompt: str = "abc", model="fake"):
    """A /v1/completions body."""
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": stream}


async def burst(urls: list[str], n: int, payload: dict, headers: dict | None = None):
    """`n` completions sent at once, spread over `urls`; their responses."""
    async with httpx.AsyncClient(timeout=60) as c:
        return await asyncio.gather(
            *(c.post(f"{urls[i % len(urls)]}/v1/completions", json=payload, headers=headers)
              for i in range(n))
        )  # fmt: skip

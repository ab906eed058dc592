"""Admission control and deadlines, over the real HTTP stack with a fake engine whose tokens take
a known time: a full backlog is an immediate 503, a request that waits past its deadline is a 503
(for a stream too: no 200 has gone out yet), one that generates past it ends with the text so far
and finish_reason "timeout", and the engine is left with nothing running."""

import asyncio
import json
import threading
import time

import httpx
import pytest

from harness import probes
from harness.probes import completion, samples, scrape
from tests.support.fake_engine import FakeEngine, fake_app


async def burst(url: str, count: int, **kw) -> list[httpx.Response]:
    return await probes.burst([url], count, completion(**kw))


def unfinished(url: str) -> float:
    """The engine's running + waiting requests, as /metrics tells them."""
    return samples(scrape(url, timeout=10))["nanoserve_engine_requests_unfinished"]


def wait_idle(url: str, within: float = 2.0) -> float:
    """Seconds until the engine has nothing left; fails after `within`."""
    t0 = time.monotonic()
    while unfinished(url) != 0:
        assert time.monotonic() - t0 < within, "engine requests left running"
        time.sleep(0.02)
    return time.monotonic() - t0


def assert_overloaded(r: httpx.Response, code: str = "server_overloaded") -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == code
    assert int(r.headers["retry-after"]) >= 1
    assert int(r.headers["retry-after-ms"]) >= 1000


def test_a_full_backlog_is_an_immediate_503_and_the_rest_complete(fake_server):
    # each token takes 0.2 s, so a request waits 0.2 s for its first: 20 at once overflow 2
    server = fake_server("--fake-delay", "0.2", "--no-auth", "--max-queued-requests", "2")
    t0 = time.monotonic()
    responses = asyncio.run(burst(server.url, 20))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    assert statuses.count(200) >= 2
    for r in responses:
        if r.status_code == 200:  # every admitted request is complete and correct
            assert r.json()["usage"]["completion_tokens"] == 5
            assert r.json()["choices"][0]["finish_reason"] == "length"
        else:
            assert_overloaded(r)
            assert "full" in r.json()["error"]["message"]
    assert time.monotonic() - t0 < 10
    wait_idle(server.url)
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert f'nanoserve_rejections_total{{reason="queue_full"}} {statuses.count(503)}.0' in metrics


def test_the_token_backlog_admits_a_lone_long_prompt(fake_server):
    server = fake_server("--fake-delay", "0.2", "--no-auth", "--max-queued-tokens", "4")
    # alone, a 6-token prompt gets in although it is above the cap; two 3-token ones fit one
    [alone] = asyncio.run(burst(server.url, 1, prompt="abcdef"))
    assert alone.status_code == 200, alone.text
    responses = asyncio.run(burst(server.url, 2, prompt="abc"))
    assert sorted(r.status_code for r in responses) == [200, 503]
    wait_idle(server.url)


def test_waiting_past_the_deadline_is_a_503_even_for_a_stream(fake_server):
    server = fake_server("--fake-delay", "3.0", "--no-auth")
    headers = {"X-Request-Timeout": "0.3"}
    for stream in (False, True):
        t0 = time.monotonic()
        r = httpx.post(
            f"{server.url}/v1/completions",
            json=completion(stream=stream),
            headers=headers,
            timeout=30,
        )
        assert_overloaded(r, code="queue_timeout")
        assert "deadline" in r.json()["error"]["message"]
        assert time.monotonic() - t0 < 2.5  # before the first token (3 s), busy machine or not
        wait_idle(server.url)  # the engine request was aborted


def test_generating_past_the_deadline_ends_with_the_text_so_far(fake_server):
    # --request-timeout caps what a client asks for: 1.5 s (about 7 tokens of 0.2 s), not 100;
    # the first token (0.2 s) is well inside it even on a busy machine
    server = fake_server("--fake-delay", "0.2", "--no-auth", "--request-timeout", "1.5")
    headers = {"X-Request-Timeout": "100"}
    url = f"{server.url}/v1/completions"
    r = httpx.post(url, json=completion(max_tokens=40), headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    choice, usage = r.json()["choices"][0], r.json()["usage"]
    assert choice["finish_reason"] == "timeout"
    assert 2 <= usage["completion_tokens"] < 10
    assert len(choice["text"]) == usage["completion_tokens"]  # one character a token
    wait_idle(server.url)

    with httpx.stream("POST", url, json=completion(max_tokens=40, stream=True), timeout=30) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "timeout"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert 2 <= len(chunks) - 1 < 10
    wait_idle(server.url)
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'nanoserve_finish_reasons_total{reason="timeout",route="/v1/completions"} 2.0' in metrics


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_a_bad_timeout_header_is_a_400_naming_it(value):
    with fake_app(no_auth=True) as client:
        r = client.post("/v1/completions", json=completion(), headers={"X-Request-Timeout": value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "X-Request-Timeout"
    assert "positive number of seconds" in r.json()["error"]["message"]


class ThreadRecordingEngine(FakeEngine):
    """Notes which thread tokenizes each prompt."""

    def __init__(self):
        super().__init__(max_model_len=8192)
        self.encoded_on: list[str] = []

    def encode(self, text: str) -> list[int]:
        self.encoded_on.append(threading.current_thread().name)
        return super().encode(text)


def test_long_prompts_are_tokenized_off_the_event_loop():
    engine = ThreadRecordingEngine()
    with fake_app(engine, no_auth=True) as client:
        loop_thread = client.portal.call(lambda: threading.current_thread().name)
        for prompt in ("abc", "ab" * 2000):
            r = client.post("/v1/completions", json=completion(max_tokens=1, prompt=prompt))
            assert r.status_code == 200, r.text
    short, long = engine.encoded_on
    assert short == loop_thread  # a short prompt costs less than the hop to a thread
    assert long != loop_thread

"""Process lifecycle through the real runner (fake engine): draining, refusing to start, pings."""

import gc
import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from harness.probes import scrape, summed, wait_until
from tests.support.fake_engine import FakeEngine, fake_app
from tests.support.servers import REPO

KEY = {"Authorization": "Bearer k"}


def test_sigterm_lets_in_flight_requests_finish_before_exit(fake_server):
    server = fake_server("--fake-delay", "0.05", "--api-key", "k")
    result = {}

    def slow():  # 40 tokens x 50 ms: ~2 s
        r = httpx.post(
            f"{server.url}/v1/completions",
            headers=KEY,
            timeout=30,
            json={"model": "fake", "prompt": "abc", "max_tokens": 40},
        )
        result["status"], result["usage"] = r.status_code, r.json().get("usage")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert result["status"] == 200
    assert result["usage"]["completion_tokens"] == 40
    # a drain is a normal end: 0, not uvicorn's re-raised SIGTERM (143), which supervisors
    # report as a failure
    assert server.proc.wait(30) == 0


def test_sigterm_drains_a_stream_and_refuses_new_connections(fake_server):
    server = fake_server("--fake-delay", "0.05", "--api-key", "k")
    events: list[str] = []

    def stream():  # 40 tokens x 50 ms
        body = {"model": "fake", "prompt": "abc", "max_tokens": 40, "stream": True}
        url = f"{server.url}/v1/completions"
        with httpx.stream("POST", url, headers=KEY, json=body, timeout=30) as r:
            events.extend(line for line in r.iter_lines() if line.startswith("data: "))

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # the listener is closed at once: a load balancer's next connection fails fast and is
    # retried on another replica
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/live", timeout=5)
    t.join(30)
    assert events[-1] == "data: [DONE]"
    assert len(events) == 41  # 40 tokens (one a chunk), then [DONE]: nothing cut
    assert server.proc.wait(30) == 0


@pytest.mark.parametrize(
    "flags,message",
    [
        ([], "no credentials configured"),
        (["--no-auth", "--host", "0.0.0.0"], "refusing to serve without authentication"),
        (["--api-key-file", "/nonexistent/keys"], "cannot read key file"),
    ],
)
def test_unsafe_or_broken_setups_refuse_to_start(flags, message):
    out = subprocess.run(
        [sys.executable, str(REPO / "tests/support/fake_server.py"), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 2
    assert message in out.stderr


def _idle_stream(**settings) -> list[str]:
    with (
        fake_app(FakeEngine(delay=0.3), api_keys=["k"], **settings) as c,
        c.stream(
            "POST",
            "/v1/completions",
            json={"model": "fake", "prompt": "a", "max_tokens": 2, "stream": True},
            headers=KEY,
        ) as r,
    ):
        return [line for line in r.iter_lines() if line]


def test_idle_streams_get_ping_comments():
    lines = _idle_stream(sse_ping_interval=0.05)
    assert ": ping" in lines
    assert lines[-1] == "data: [DONE]"


def test_pings_can_be_turned_off():
    # vllm bench serve 0.32 strips each read's whitespace, so a ping read alone fuses with the
    # next event and the whole stream is lost to it ("Never received a valid chunk")
    lines = _idle_stream(sse_ping_interval=0)
    assert ": ping" not in lines
    assert [ln for ln in lines if ln.startswith("data: {")], lines
    assert lines[-1] == "data: [DONE]"


def test_the_startup_heap_is_out_of_the_collectors_sight_once_ready():
    # a full collection over the startup heap (torch, vLLM) stopped the event loop for 0.6-1 s
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        with fake_app(api_keys=["k"]):
            frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    assert frozen > 10_000  # the test process's own startup heap: pytest, FastAPI, the server


def test_the_startup_heap_is_back_in_the_collectors_sight_once_stopped():
    # frozen at exit, Triton's objects outlived the interpreter and nanobind printed a 31-line
    # leak report on stderr after the last log line
    try:
        with fake_app(api_keys=["k"]):
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_a_drain_ends_what_outlives_its_timeout_the_documented_way(fake_server):
    # 60 tokens x 0.1 s = 6 s of work, 3 s of drain: ended by their deadline at 3 - 2 = 1 s
    flags = ["--fake-delay", "0.1", "--api-key", "k", "--graceful-shutdown-timeout", "3"]
    server = fake_server(*flags, "--metrics-open")
    url, body = f"{server.url}/v1/completions", {"model": "fake", "prompt": "abc", "max_tokens": 60}
    got: dict = {}

    def plain():
        r = httpx.post(url, headers=KEY, json=body, timeout=30)
        got["plain"] = (r.status_code, r.headers["content-type"], r.json())

    def stream():
        with httpx.stream("POST", url, headers=KEY, json={**body, "stream": True}, timeout=30) as r:
            got["stream"] = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]

    threads = [threading.Thread(target=plain), threading.Thread(target=stream)]
    for t in threads:
        t.start()

    # both requests being answered (the scrape is the third in flight), not a fixed sleep: on a
    # busy machine 0.5 s was once too short for the stream to be accepted before SIGTERM
    def both_in_flight() -> bool:
        return summed(scrape(server.url)).get("nanoserve_requests_in_flight", 0) >= 3

    assert wait_until(both_in_flight, 20)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    # not uvicorn's bare "500 Internal Server Error" at the timeout: the text so far
    status, kind, answer = got["plain"]
    assert (status, kind) == (200, "application/json")
    assert answer["choices"][0]["finish_reason"] == "timeout"
    assert 5 <= answer["usage"]["completion_tokens"] < 60
    events = got["stream"]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "timeout"
    assert server.proc.wait(30) == 0
    assert time.monotonic() - t0 < 3.5

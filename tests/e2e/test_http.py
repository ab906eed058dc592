"""Plain-HTTP behaviour of the real server: legacy /generate, probes, metrics, disconnects,
and what happens when the engine core dies."""

import json
import signal
import subprocess

import httpx
import psutil
import pytest
import requests

from harness.probes import samples, scrape
from tests.support.servers import metric, wait_until

pytestmark = pytest.mark.engine

MODEL = "shakespeare_char"


def test_generate_with_curl_as_documented(demo):
    # The README's curl snippet, verbatim but for the port.
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-X",
            "POST",
            f"{demo.url}/generate",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"prompt": "ROMEO:", "max_tokens": 50, "temperature": 0.8}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    body = json.loads(out.stdout)
    assert body["text"].startswith("ROMEO:")
    assert body["tokens_generated"] == 50
    assert len(body["text"]) == len("ROMEO:") + 50  # one token per character


def test_generate_with_requests_as_documented(demo):
    # The README's requests snippet, verbatim but for the URL.
    response = requests.post(
        f"{demo.url}/generate", json={"prompt": "JULIET:", "max_tokens": 30, "temperature": 0}
    )
    response.raise_for_status()
    result = response.json()
    assert set(result) == {"text", "tokens_generated"}
    assert result["text"].startswith("JULIET:") and result["tokens_generated"] == 30


def test_generate_defaults_and_errors(demo):
    r = httpx.post(f"{demo.url}/generate", json={"prompt": "A"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["tokens_generated"] == 100  # the seed's default max_tokens
    r = httpx.post(f"{demo.url}/generate", json={"prompt": ""})
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)
    # past the context window /generate crops as nanoGPT does, up to --crop-max-tokens
    r = httpx.post(f"{demo.url}/generate", json={"prompt": "A", "max_tokens": 10**6})
    assert r.status_code == 400 and "at most 1024" in r.json()["detail"]
    assert r.json()["error"]["param"] == "max_tokens"


def test_probes(demo):
    assert httpx.get(demo.url + "/").json()["status"] == "ok"
    assert httpx.get(demo.url + "/health").json() == {"status": "healthy", "model_loaded": True}
    assert httpx.get(demo.url + "/live").status_code == 200
    assert httpx.get(demo.url + "/ready").status_code == 200


def test_metrics_expose_engine_and_server_families(demo):
    httpx.post(
        f"{demo.url}/v1/completions",
        json={"model": MODEL, "prompt": "A", "max_tokens": 3},
        timeout=60,
    )
    text = httpx.get(demo.url + "/metrics").text
    assert "vllm:num_requests_running" in text
    assert "vllm:time_to_first_token_seconds" in text
    assert 'nanoserve_requests_total{route="/v1/completions",status="200"}' in text
    assert metric(demo.url, "nanoserve_engine_up") == 1.0


# 64 prompts x 16 choices x 120 tokens (122,880): half a minute of work or more on 2 cores,
# inside the demo's 128-character context, so no machine finishes it before the client leaves.
LONG = {"model": MODEL, "prompt": ["ROMEO:"] * 64, "max_tokens": 120, "n": 16, "temperature": 1.0}
ABORTED = 'nanoserve_finish_reasons_total{reason="abort",route="/v1/completions"}'


def aborted_choices(base_url: str) -> float:
    """Choices the server has counted as aborted; the series exists once one was."""
    return samples(scrape(base_url)).get(ABORTED, 0.0)


def test_stream_disconnect_aborts_in_engine(demo):
    assert wait_until(lambda: metric(demo.url, "nanoserve_engine_requests_unfinished") == 0, 30)
    before = aborted_choices(demo.url)
    with (
        httpx.Client(timeout=60) as c,
        c.stream("POST", f"{demo.url}/v1/completions", json={**LONG, "stream": True}) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()  # keep it: a dropped iterator closes the response
        assert next(lines).startswith('data: {"id"')  # generation has started
    # The connection is closed here, long before 122,880 tokens could be done. Reading the
    # live gauge while the request runs raced a busy CI machine's /metrics answer; the
    # choices counted as aborted cannot race: they exist only if the request was cut short.
    assert wait_until(lambda: metric(demo.url, "nanoserve_engine_requests_unfinished") == 0, 10)
    assert wait_until(lambda: aborted_choices(demo.url) > before, 10)


def test_non_stream_disconnect_aborts_in_engine(demo):
    assert wait_until(lambda: metric(demo.url, "nanoserve_engine_requests_unfinished") == 0, 30)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{demo.url}/v1/completions",
            json=LONG,
            headers={"x-request-id": "gone-away-1"},
            timeout=0.5,
        )
    assert wait_until(lambda: metric(demo.url, "nanoserve_engine_requests_unfinished") == 0, 10)
    assert wait_until(lambda: '"status": 499' in demo.log() and "gone-away-1" in demo.log(), 10)
    line = next(ln for ln in demo.log().splitlines() if "gone-away-1" in ln and "499" in ln)
    assert json.loads(line)["status"] == 499


def _engine_core(server) -> psutil.Process:
    children = psutil.Process(server.proc.pid).children(recursive=True)
    cores = [p for p in children if "EngineCore" in " ".join([p.name(), *p.cmdline()])]
    assert cores, [(p.pid, p.name(), p.cmdline()) for p in children]
    return cores[0]


@pytest.fixture(scope="module")
def from_checkout(start_server, nanogpt_checkout, tmp_path_factory):
    """`nanoserve serve out/ckpt.pt` run from a nanoGPT checkout, as the README shows: the
    vocabulary is data/<dataset>/meta.pkl under the working directory (nothing beside the
    checkpoint). This server's engine is killed by the last test of this module."""
    cache = tmp_path_factory.mktemp("checkout-cache")
    args = ("out/ckpt.pt", "--no-auth", "--cache-dir", str(cache), "--log-format", "json")
    return start_server(*args, cwd=nanogpt_checkout)


def test_serving_a_nanogpt_checkout_finds_its_char_vocabulary(from_checkout, demo):
    body = {"prompt": "ROMEO:", "max_tokens": 40, "temperature": 0}
    got = httpx.post(f"{from_checkout.url}/generate", json=body, timeout=60).json()
    want = httpx.post(f"{demo.url}/generate", json=body, timeout=60).json()
    assert got == want  # the same model: the same greedy text, one token per character
    assert got["tokens_generated"] == 40 and len(got["text"]) == len("ROMEO:") + 40
    log = from_checkout.log()  # the converter's own line: not GPT-2's BPE
    assert "char vocabulary of 77 from" in log and "data/shakespeare_char/meta.pkl" in log


LONG_OUT = {**LONG, "model": "out"}  # served as its checkpoint's directory name


def test_engine_death_ends_streams_and_exits_nonzero(from_checkout):
    server = from_checkout
    core = _engine_core(server)
    with (
        httpx.Client(timeout=60) as c,
        c.stream("POST", f"{server.url}/v1/completions", json={**LONG_OUT, "stream": True}) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()
        next(lines)
        core.send_signal(signal.SIGKILL)
        rest = [ln for ln in lines if ln.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    error = json.loads(rest[-2][6:])["error"]
    assert error["type"] == "server_error"
    health = httpx.get(server.url + "/health", timeout=5)
    assert health.status_code == 503
    assert httpx.get(server.url + "/ready", timeout=5).status_code == 503
    r = httpx.post(f"{server.url}/v1/completions", json={**LONG_OUT, "n": 1}, timeout=5)
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert server.proc.wait(30) != 0

"""Metrics and access lines against a fake engine (fast; no vLLM): every request is counted and
logged once, with the reason it was refused, its finish reasons and its time to first token.
The same behaviour against the real engine and a real Prometheus:
tests/e2e/test_observability.py."""

import asyncio
import json
import logging
import subprocess
import sys

import pytest
from nanoserve.server.engine.interface import Sampling
from nanoserve.server.observability.access_log import Exchange
from nanoserve.server.observability.logs import RequestIdFilter
from nanoserve.server.observability.metrics import REJECTION_REASONS, Metrics
from nanoserve.server.serving.job import COMPLETION, Job
from nanoserve.server.serving.prepare import Prepared, PreparedPrompt

from tests.support.fake_engine import FakeEngine, fake_app
from tests.support.promql import used_names

BODY = {"model": "fake", "prompt": "abc", "max_tokens": 4}


@pytest.fixture
def keyfile(tmp_path):
    path = tmp_path / "keys"
    path.write_text(
        "alice sk-alice rpm=2\nbob sk-bob tpm=20\ncarol sk-carol concurrency=1\n"
        "prom sk-prom metrics\n"
    )
    path.chmod(0o600)
    return path


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def sample(client, name, labels=None):
    return client.app.state.runtime.metrics.registry.get_sample_value(name, labels or {})


def access_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "nanoserve.access"]


def line_for(caplog, rid: str) -> logging.LogRecord:
    [line] = [r for r in access_lines(caplog) if r.request_id == rid]
    return line


def test_a_completion_has_one_access_line_with_everything(keyfile, caplog):
    caplog.set_level(logging.INFO, "nanoserve.access")
    with fake_app(api_key_file=keyfile) as c:
        r = c.post(
            "/v1/completions",
            json={**BODY, "n": 2},
            headers={**bearer("sk-alice"), "x-request-id": "trace-1"},
        )
        assert r.status_code == 200, r.text
    line = line_for(caplog, "trace-1")
    assert line.caller == "alice" and line.route == "/v1/completions" and line.status == 200
    assert (line.prompt_tokens, line.completion_tokens) == (3, 8)
    assert line.finish_reason == "length" and line.disconnected is False
    assert line.reason is None
    assert 0 < line.ttft_ms <= line.duration_ms
    assert not hasattr(line, "prompt_text")  # no text unless --log-text-chars


def test_text_is_logged_only_when_asked_and_truncated(caplog):
    caplog.set_level(logging.INFO, "nanoserve.access")
    with fake_app(log_text_chars=2, no_auth=True) as c:
        c.post("/v1/completions", json=BODY, headers={"x-request-id": "text-1"})
    line = line_for(caplog, "text-1")
    assert (line.prompt_text, line.completion_text) == ("ab", "de")  # "abc" -> "defg", cut at 2


def test_rejections_are_counted_by_reason_once_each(keyfile, caplog):
    caplog.set_level(logging.INFO, "nanoserve.access")
    engine = FakeEngine(max_model_len=16)
    with fake_app(engine, api_key_file=keyfile, max_auth_failures=100) as c:
        sent = {
            "auth": [c.post("/v1/completions", json=BODY, headers=bearer("sk-wrong"))],
            "invalid_request": [
                c.post("/v1/completions", json={**BODY, "n": 99}, headers=bearer("sk-bob")),
                c.post("/v1/completions", json={**BODY, "model": "x"}, headers=bearer("sk-bob")),
            ],
            "context_too_long": [
                c.post("/v1/completions", json={**BODY, "max_tokens": 15}, headers=bearer("sk-bob"))
            ],
            "rate_limit_tpm": [
                c.post("/v1/completions", json={**BODY, "max_tokens": 12}, headers=bearer("sk-bob"))
                for _ in range(2)
            ][1:],
            "rate_limit_rpm": [
                c.post("/v1/completions", json=BODY, headers=bearer("sk-alice")) for _ in range(3)
            ][2:],
        }
        c.app.state.runtime.phase = "draining"
        sent["overload"] = [c.post("/v1/completions", json=BODY, headers=bearer("sk-carol"))]
        statuses = {k: [r.status_code for r in rs] for k, rs in sent.items()}
        assert statuses == {
            "auth": [401],
            "invalid_request": [400, 404],
            "context_too_long": [400],
            "rate_limit_tpm": [429],
            "rate_limit_rpm": [429],
            "overload": [503],
        }
        # a draining replica's 503 closes the connection, so a proxy stops reusing it
        assert sent["overload"][0].headers["connection"] == "close"
        assert sent["rate_limit_rpm"][0].headers.get("connection") != "close"
        for reason in REJECTION_REASONS:
            want = len(sent.get(reason, []))
            got = sample(c, "nanoserve_rejections_total", {"reason": reason})
            assert (got or 0) == want, reason
        assert sample(c, "nanoserve_ready") == 0  # draining
        # and the access lines say the same, each request once
        ids = [r.headers["x-request-id"] for rs in sent.values() for r in rs]
        reasons = [line_for(caplog, rid).reason for rid in ids]
        assert reasons == [k for k, rs in sent.items() for _ in rs]
        assert line_for(caplog, sent["rate_limit_rpm"][0].headers["x-request-id"]).caller == "alice"
        # a 429 from the guard is still counted under its route, not as "unmatched"
        assert sample(c, "nanoserve_requests_total", {"route": "/v1/completions", "status": "429"})


def test_concurrency_rejection_has_its_own_reason(keyfile):
    engine = FakeEngine(delay=0.05)
    with fake_app(engine, api_key_file=keyfile) as c:
        with c.stream("POST", "/v1/completions", json={**BODY, "stream": True},
                      headers=bearer("sk-carol")) as first:  # fmt: skip
            assert first.status_code == 200
            r = c.post("/v1/completions", json=BODY, headers=bearer("sk-carol"))
            assert r.status_code == 429, r.text
            first.read()
        want = {"reason": "rate_limit_concurrency"}
        assert sample(c, "nanoserve_rejections_total", want) == 1


def test_finish_reasons_are_counted_per_choice_by_route():
    with fake_app(FakeEngine(stop_after=2), no_auth=True) as c:
        c.post("/v1/completions", json={**BODY, "n": 3})  # stops after 2 of 4 tokens
        c.post("/v1/completions", json={**BODY, "max_tokens": 2})  # ends at its length
        c.post("/generate", json={"prompt": "abc", "max_tokens": 5})
        got = {
            (route, reason): sample(
                c, "nanoserve_finish_reasons_total", {"route": route, "reason": reason}
            )
            for route in ("/v1/completions", "/generate")
            for reason in ("stop", "length")
        }
    assert got == {
        ("/v1/completions", "stop"): 3.0,
        ("/v1/completions", "length"): 1.0,
        ("/generate", "stop"): 1.0,
        ("/generate", "length"): None,
    }


def test_first_token_and_inter_token_latency_as_the_client_sees_them():
    with fake_app(FakeEngine(delay=0.02), no_auth=True) as c:
        r = c.post("/v1/completions", json={**BODY, "max_tokens": 5, "stream": True})
        assert r.text.endswith("data: [DONE]\n\n")
        c.post("/v1/completions", json={**BODY, "max_tokens": 5})
        route = {"route": "/v1/completions"}
        assert sample(c, "nanoserve_time_to_first_token_seconds_count", route) == 2
        # the fake engine waits 20 ms before each token: the first comes after at least that
        assert sample(c, "nanoserve_time_to_first_token_seconds_sum", route) >= 2 * 0.02
        # streams only: 5 tokens in 5 events, 4 gaps of about 20 ms each
        assert sample(c, "nanoserve_inter_token_latency_seconds_count", route) == 4
        below_10ms = sample(
            c, "nanoserve_inter_token_latency_seconds_bucket", {**route, "le": "0.01"}
        )
        assert below_10ms == 0


def test_engine_death_mid_stream_is_an_engine_error_with_error_finish(caplog):
    caplog.set_level(logging.INFO, "nanoserve.access")
    engine = FakeEngine(delay=0.05)
    with fake_app(engine, no_auth=True) as c:
        with c.stream("POST", "/v1/completions", json={**BODY, "stream": True, "n": 2},
                      headers={"x-request-id": "dies-1"}) as r:  # fmt: skip
            lines = r.iter_lines()
            assert next(lines).startswith("data: {")
            engine.dead = True
            rest = list(lines)
        assert any('"error"' in ln for ln in rest)
        assert sample(c, "nanoserve_rejections_total", {"reason": "engine_error"}) == 1
        labels = {"route": "/v1/completions", "reason": "error"}
        assert sample(c, "nanoserve_finish_reasons_total", labels) == 2
    line = line_for(caplog, "dies-1")
    assert (line.status, line.reason, line.finish_reason) == (200, "engine_error", "error")


def test_a_job_its_client_left_settles_as_499_with_abort():
    metrics = Metrics(__import__("prometheus_client").CollectorRegistry())
    scope = {"method": "POST", "path": "/v1/completions", "headers": []}
    exchange = Exchange("left-1", scope, metrics, "127.0.0.1")
    work = Prepared(
        [PreparedPrompt([1, 2], "ab")], Sampling(max_tokens=3, n=2), False, None, False, False
    )
    job = Job("cmpl-left-1", exchange, "fake", work, None, COMPLETION)

    from nanoserve.server.serving.service import CompletionService

    class Service:  # settle() needs only these of the service when no caller is metered
        metrics = exchange.metrics
        queued_requests = queued_tokens = 0

        _dequeue = CompletionService._dequeue

        def __init__(self):
            self.jobs = {job}

    service = Service()
    asyncio.run(CompletionService.settle(service, job))  # type: ignore[arg-type]
    assert exchange.closed
    assert service.jobs == set()  # a drain has nothing of it left to cut
    assert (
        metrics.registry.get_sample_value(
            "nanoserve_rejections_total", {"reason": "client_disconnect"}
        )
        == 1
    )
    got = metrics.registry.get_sample_value(
        "nanoserve_finish_reasons_total", {"route": "unmatched", "reason": "abort"}
    )
    assert got == 2
    assert (
        metrics.registry.get_sample_value(
            "nanoserve_requests_total", {"route": "unmatched", "status": "499"}
        )
        == 1
    )


def test_build_info_and_alert_threshold_are_exported():
    with fake_app(ttft_alert_seconds=1.5, no_auth=True) as c:
        info = {
            "version": __import__("nanoserve").__version__,
            "engine": "fake 0",
            "model": "fake",
            "dtype": "float32",
            "max_model_len": "64",
            "device": "fake",
        }
        assert sample(c, "nanoserve_build_info", info) == 1
        assert sample(c, "nanoserve_ttft_alert_threshold_seconds") == 1.5
        assert sample(c, "nanoserve_ready") == 1


def test_an_error_line_carries_the_request_id_and_a_trace_only_for_5xx(caplog):
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(RequestIdFilter())  # as logs.configure() puts it on its handler
    engine = FakeEngine()

    async def broken(*args):
        raise RuntimeError("a bug")
        yield

    engine.generate = broken
    with fake_app(engine, no_auth=True, raise_server_exceptions=False) as c:
        r = c.post("/v1/completions", json=BODY, headers={"x-request-id": "bug-1"})
        assert r.status_code == 500
        c.post("/v1/completions", json={**BODY, "n": 99}, headers={"x-request-id": "bad-1"})
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [getattr(r, "request_id", None) for r in errors] == ["bug-1"]
    assert errors[0].exc_info is not None
    assert line_for(caplog, "bug-1").reason == "internal_error"
    # a 4xx: the access line says it all, no trace
    assert all(r.exc_info is None for r in caplog.records if getattr(r, "request_id", 0) == "bad-1")


def test_every_log_line_is_json_in_this_and_in_vllms_processes(tmp_path):
    # this process (logs.configure) and a process applying the file vLLM is pointed to, as
    # vLLM's engine core does at import: warnings, uvicorn's and vLLM's loggers, all JSON; and
    # what native code or a child process writes straight to stderr is wrapped
    code = f"""
import json, logging, logging.config, os, subprocess, sys, warnings
from nanoserve.server.observability import logs
from nanoserve.server.settings import Settings
logs.configure(Settings(cache_dir={str(tmp_path)!r}))
logging.getLogger("uvicorn.error").info("Started server process")
logging.getLogger("vllm.engine").warning("from vllm")
logging.getLogger("some.library").warning("from a library")
warnings.warn("a warning")
logging.config.dictConfig(json.load(open(os.environ["VLLM_LOGGING_CONFIG_PATH"])))
logging.getLogger("vllm.worker").info("from the engine core")
warnings.warn("a warning in the engine core")
os.write(2, b"[W1127 utils.cpp:68] Warning: from native code\\n")
os.write(2, b"Loading:   0%|  | 0/1\\rLoading: 100%|##| 1/1\\n")
subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('a child says\\\\n')"])
raise SystemExit("the last words")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert [r["logger"] for r in records] == [
        "uvicorn.error", "vllm.engine", "some.library", "py.warnings", "vllm.worker",
        "py.warnings", "stderr", "stderr", "stderr", "stderr", "stderr",
    ]  # fmt: skip
    assert [r["message"] for r in records[6:]] == [
        "[W1127 utils.cpp:68] Warning: from native code",
        "Loading:   0%|  | 0/1",
        "Loading: 100%|##| 1/1",
        "a child says",
        "the last words",
    ]
    assert all({"time", "level", "message"} <= set(r) for r in records)


def test_every_nanoserve_name_of_the_dashboard_and_rules_is_exported(keyfile):
    # the fast check (the live one, with vLLM's names too, is tests/e2e/test_observability.py)
    with fake_app(FakeEngine(max_model_len=16), api_key_file=keyfile) as c:
        c.post("/v1/completions", json={**BODY, "stream": True}, headers=bearer("sk-alice"))
        c.post("/v1/completions", json=BODY, headers=bearer("sk-wrong"))
        text = c.get("/metrics", headers=bearer("sk-prom")).text
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    ours = {n for n in used_names() if n.startswith("nanoserve_")}
    assert len(ours) >= 15
    assert sorted(ours - exported) == []

"""Observability end to end: a real Prometheus (Debian's package) scrapes the real server on the
demo model with a `metrics`-scoped key while real clients send a known mix of requests; through
Prometheus' HTTP API the counters hold exactly what the clients saw, every metric the dashboard
and the alert rules use returns data, and every rule evaluates. The access line of a request
names the series it was counted in, and every log line is JSON: from the start (a conversion
included) to the exit a SIGTERM asks for, and none of a normal life's lines is a warning."""

import json
import math
import re
import shutil
import time

import httpx
import openai
import pytest

from harness.processes import ServerProcess, free_port
from tests.support.promql import RULES, dashboard_exprs, metric_names, used_names

pytestmark = pytest.mark.engine

MODEL = "shakespeare_char"
# 16 prompts x 16 choices x 120 tokens (30,720): ~8 s of work on 2 cores, so a client leaving
# after the first event leaves mid-generation even when a busy machine stalls it for a while
# (4 prompts' work took ~2 s, about as long as such stalls were seen to last in CI)
LONG = {"model": MODEL, "prompt": ["ROMEO:"] * 16, "max_tokens": 120, "n": 16, "stream": True}
LONG_CHOICES = len(LONG["prompt"]) * LONG["n"]
COUNTERS = (
    "nanoserve_requests_total",
    "nanoserve_rejections_total",
    "nanoserve_finish_reasons_total",
    "nanoserve_caller_requests_total",
    "nanoserve_caller_rejections_total",
    "nanoserve_caller_completion_tokens_total",
    "nanoserve_time_to_first_token_seconds_count",
)


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        assert r.status_code == 200, f"{expr}: {r.text}"
        return r.json()["data"]["result"]

    def values(self, name: str) -> dict[tuple, float]:
        """{sorted labels (without job and instance): value} of every series of `name`."""
        out = {}
        for s in self.query(name):
            labels = {k: v for k, v in s["metric"].items() if k not in ("job", "instance")}
            labels.pop("__name__", None)
            out[tuple(sorted(labels.items()))] = float(s["value"][1])
        return out

    def counters(self) -> dict[str, dict[tuple, float]]:
        return {name: self.values(name) for name in COUNTERS}

    def scraped_after(self, t: float, timeout: float = 30) -> None:
        """Wait for a scrape that began after unix time `t`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.query('timestamp(up{job="nanoserve"} == 1)')
            if got and float(got[0]["value"][1]) > t:
                return
            time.sleep(0.5)
        raise AssertionError(f"no successful scrape after {t} within {timeout} s")


@pytest.fixture(scope="module")
def prometheus(secure, tmp_path_factory) -> Prometheus:
    """Debian's prometheus on loopback, scraping `secure` every second with the `metrics`-scoped
    key and evaluating the rules file every second; its data lives in a temp dir."""
    assert shutil.which("prometheus"), "prometheus missing: scripts/setup.sh --with-test-tools"
    work = tmp_path_factory.mktemp("prometheus")
    (work / "scrape.key").write_text("sk-prom")
    (work / "prometheus.yml").write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "nanoserve",
                        "authorization": {"credentials_file": str(work / "scrape.key")},
                        "static_configs": [{"targets": [f"127.0.0.1:{secure.port}"]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    cmd = [
        "prometheus",
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
    ]
    with ServerProcess(cmd, port, work / "prometheus.log", cwd=work, name="prometheus") as proc:
        proc.wait_ready(60, path="/-/ready")
        prom = Prometheus(proc.url)
        prom.scraped_after(time.time())
        yield prom


def sdk(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def send_mix(server) -> dict:
    """A known mix of requests; returns what the clients saw, to compare the counters with."""
    seen = {"answers": [], "finish": [], "tokens": 0, "rejected": [], "first_tokens": 0}
    seen["admitted"] = []  # caller of each request past the guard
    carol = sdk(server, "sk-carol")

    def completed(route: str, usage_tokens: int, reasons: list[str], caller="carol") -> None:
        seen["answers"].append((route, 200))
        seen["admitted"].append(caller)
        seen["tokens"] += usage_tokens
        seen["finish"] += [(route, r) for r in reasons]
        seen["first_tokens"] += route == "/v1/completions" and usage_tokens > 0

    def refused(route: str, status: int, reason: str, caller: str) -> None:
        seen["answers"].append((route, status))
        seen["rejected"].append((caller, reason))

    for _ in range(3):
        r = carol.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=5)
        completed("/v1/completions", r.usage.completion_tokens, [r.choices[0].finish_reason])
    for _ in range(2):
        chunks = list(
            carol.completions.create(
                model=MODEL,
                prompt="JULIET:",
                max_tokens=8,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
        completed("/v1/completions", chunks[-1].usage.completion_tokens, [r for r in reasons if r])
    # greedy, with a stop string: the id is followed from the access line below
    raw = carol.completions.with_raw_response.create(
        model=MODEL,
        prompt="ROMEO:",
        max_tokens=60,
        temperature=0,
        stop=["\n"],
        extra_headers={"x-request-id": "obs-followed-1"},
    )
    r = raw.parse()
    completed("/v1/completions", r.usage.completion_tokens, [r.choices[0].finish_reason])
    seen["followed"] = r
    r = carol.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Speak."}], max_tokens=6
    )
    completed("/v1/chat/completions", r.usage.completion_tokens, [r.choices[0].finish_reason])
    g = httpx.post(
        f"{server.url}/generate",
        json={"prompt": "ROMEO:", "max_tokens": 5},
        headers={"Authorization": "Bearer sk-carol"},
        timeout=60,
    )
    assert g.status_code == 200, g.text
    completed("/generate", g.json()["tokens_generated"], ["length"])

    # refusals, each with its reason
    for _ in range(2):
        with pytest.raises(openai.AuthenticationError):
            sdk(server, "sk-wrong").completions.create(model=MODEL, prompt="A", max_tokens=1)
        refused("/v1/completions", 401, "auth", "unauthenticated")
    with pytest.raises(openai.BadRequestError):
        carol.completions.create(model=MODEL, prompt="A", max_tokens=1, n=99)
    refused("/v1/completions", 400, "invalid_request", "carol")
    with pytest.raises(openai.BadRequestError) as e:
        carol.completions.create(model=MODEL, prompt="A", max_tokens=500)
    assert e.value.code == "context_length_exceeded"
    refused("/v1/completions", 400, "context_too_long", "carol")
    # alice may send 2 requests per 4 s window: send until one is refused
    alice = sdk(server, "sk-alice")
    for _ in range(6):
        try:
            r = alice.completions.create(model=MODEL, prompt="A", max_tokens=1)
        except openai.RateLimitError:
            refused("/v1/completions", 429, "rate_limit_rpm", "alice")
            break
        reasons = [r.choices[0].finish_reason]
        completed("/v1/completions", r.usage.completion_tokens, reasons, "alice")
    else:
        raise AssertionError("alice was never limited")

    # a client that leaves after the first event: 499, every choice aborted
    with (
        httpx.Client(timeout=60) as c,
        c.stream(
            "POST",
            f"{server.url}/v1/completions",
            json=LONG,
            headers={"Authorization": "Bearer sk-ops", "x-request-id": "obs-left-1"},
        ) as r,
    ):
        assert r.status_code == 200
        assert next(r.iter_lines()).startswith("data: {")
    refused("/v1/completions", 499, "client_disconnect", "ops")
    seen["admitted"] += ["ops", "carol", "carol"]  # the stream, and carol's two 400s
    seen["finish"] += [("/v1/completions", "abort")] * LONG_CHOICES
    seen["first_tokens"] += 1
    return seen


def delta(before: dict, after: dict) -> dict:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def count(pairs: list[tuple]) -> dict:
    out: dict = {}
    for p in pairs:
        out[p] = out.get(p, 0) + 1
    return out


@pytest.fixture(scope="module")
def mix(secure, prometheus):
    time.sleep(5)  # other tests' requests settle and are scraped; then a quiet snapshot
    prometheus.scraped_after(time.time())
    before = prometheus.counters()
    seen = send_mix(secure)
    # the stream the client left is settled when the server notices: wait for its 499
    left = (("route", "/v1/completions"), ("status", "499"))
    want = before["nanoserve_requests_total"].get(left, 0) + 1
    deadline = time.monotonic() + 30
    while prometheus.values("nanoserve_requests_total").get(left, 0) < want:
        assert time.monotonic() < deadline, "the 499 was never counted"
        time.sleep(0.5)
    prometheus.scraped_after(time.time())
    return seen, {name: delta(before[name], now) for name, now in prometheus.counters().items()}


def test_counters_hold_exactly_what_the_clients_saw(mix):
    seen, d = mix
    requests = {
        k: v for k, v in d["nanoserve_requests_total"].items() if dict(k)["route"] != "/metrics"
    }
    want = {(("route", r), ("status", str(s))): n for (r, s), n in count(seen["answers"]).items()}
    assert requests == want
    want = {(("reason", r),): n for r, n in count([r for _, r in seen["rejected"]]).items()}
    assert d["nanoserve_rejections_total"] == want
    want = {(("reason", f), ("route", r)): n for (r, f), n in count(seen["finish"]).items()}
    assert d["nanoserve_finish_reasons_total"] == want
    want = {(("caller", c),): n for c, n in count(seen["admitted"]).items()}
    assert d["nanoserve_caller_requests_total"] == want
    # a client that leaves is not a refusal of the caller: not in the per-caller rejections
    refusals = [(c, r) for c, r in seen["rejected"] if r != "client_disconnect"]
    want = {(("caller", c), ("reason", r)): n for (c, r), n in count(refusals).items()}
    assert d["nanoserve_caller_rejections_total"] == want
    # every token the completed requests' usage reported (ops' aborted stream is its own)
    tokens = d["nanoserve_caller_completion_tokens_total"]
    assert tokens.pop((("caller", "ops"),)) > 0
    assert sum(tokens.values()) == seen["tokens"]
    first = d["nanoserve_time_to_first_token_seconds_count"]
    assert first[(("route", "/v1/completions"),)] == seen["first_tokens"]


def test_one_request_is_followed_from_its_access_line_to_the_metrics(secure, mix, prometheus):
    seen, _ = mix
    lines = [json.loads(ln) for ln in secure.log().splitlines() if "obs-followed-1" in ln]
    [access] = [ln for ln in lines if ln["logger"] == "nanoserve.access"]
    r = seen["followed"]
    assert access["caller"] == "carol" and access["status"] == 200
    assert access["route"] == "/v1/completions" and access["disconnected"] is False
    assert access["finish_reason"] == r.choices[0].finish_reason
    assert access["prompt_tokens"] == r.usage.prompt_tokens == 6
    assert access["completion_tokens"] == r.usage.completion_tokens
    assert 0 < access["ttft_ms"] <= access["duration_ms"]
    # the series its fields name exist and count it
    labels = f'route="{access["route"]}", status="{access["status"]}"'
    assert float(prometheus.query(f"nanoserve_requests_total{{{labels}}}")[0]["value"][1]) >= 1
    labels = f'route="{access["route"]}", reason="{access["finish_reason"]}"'
    assert prometheus.query(f"nanoserve_finish_reasons_total{{{labels}}}")
    [left] = [
        json.loads(ln)
        for ln in secure.log().splitlines()
        if "obs-left-1" in ln and '"nanoserve.access"' in ln
    ]
    assert (left["status"], left["reason"], left["disconnected"]) == (
        499,
        "client_disconnect",
        True,
    )
    assert left["finish_reason"] == "abort" and left["caller"] == "ops"


def loaded_rules(prometheus: Prometheus) -> list[dict]:
    groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=30).json()["data"]["groups"]
    return [rule for g in groups for rule in g["rules"]]


def test_every_metric_of_the_dashboard_and_the_rules_has_data(mix, prometheus):
    rules = loaded_rules(prometheus)
    assert len(rules) == RULES.read_text().count("- alert:"), "every rule of the file is loaded"
    names = used_names()
    # the rules as Prometheus parsed them name nothing else
    assert set().union(*(metric_names(r["query"]) for r in rules)) <= names
    assert "nanoserve_time_to_first_token_seconds_bucket" in names and "up" in names
    dead = [n for n in sorted(names) if not prometheus.query(f'count({{__name__="{n}"}})')]
    assert dead == [], "names no series has"
    # every rule evaluates without error (a firing or quiet rule are both fine here)
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []


def test_no_dashboard_panel_is_dead(secure, mix, prometheus):
    # rate() needs an increase between two scrapes of a series: a plain and a streamed
    # completion now, once the mix's series exist, put one in every panel's 5 min window
    # (the mix alone may be older than that when the whole suite runs)
    carol = sdk(secure, "sk-carol")
    carol.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=8)
    for _ in carol.completions.create(model=MODEL, prompt="JULIET:", max_tokens=8, stream=True):
        pass
    time.sleep(2)
    prometheus.scraped_after(time.time())
    dead = []
    for expr in dashboard_exprs():
        result = prometheus.query(expr.replace("$__rate_interval", "5m"))
        values = [float(s["value"][1]) for s in result] if result else []
        if not any(math.isfinite(v) for v in values):
            dead.append(expr)
    assert dead == []


def not_json(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            out.append(line)
    return out


def test_every_log_line_is_json(secure, mix):
    # vLLM's and uvicorn's start-up lines and warnings included
    lines = secure.log().splitlines()
    assert len(lines) > 20
    assert not_json(lines) == []


def test_a_whole_life_is_json_lines_and_none_is_a_warning(start_server, tmp_path):
    # A normal life of the real server: the demo converted into an empty cache, the engine
    # started, a request served, SIGTERM, and the exit (vLLM's processes stopped, the
    # interpreter's teardown). Every line is JSON with one time format, the converter's and the
    # last ones included; what is harmless on CPU is logged below WARNING
    # (server/observability/harmless.py).
    key = "sk-whole-life"  # a key: no --no-auth, whose warning is meant to be seen
    server = start_server(f"--api-key={key}", "--cache-dir", str(tmp_path / "cache"))
    answer = sdk(server, key).completions.create(model=MODEL, prompt="ROMEO:", max_tokens=5)
    assert answer.usage.completion_tokens == 5
    assert server.stop(grace=60) == 0
    lines = server.log().splitlines()
    assert not_json(lines) == []
    records = [json.loads(line) for line in lines]
    loud = [(r["logger"], r["message"]) for r in records if r["level"] not in ("DEBUG", "INFO")]
    assert loud == []
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", r["time"]) for r in records)
    said = [(r["logger"], r["message"].split(":")[0]) for r in records]
    assert ("nanoserve.convert", "done") in said  # the conversion's lines, under their logger
    assert ("nanoserve.access", "POST /v1/completions 200") in said
    assert ("uvicorn.error", f"Finished server process [{server.proc.pid}]") in said

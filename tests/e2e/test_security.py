"""The security layer on the real server and engine, with the real openai SDK and Redis."""

import json
import signal
import socket
import time

import httpx
import jwt
import openai
import pytest

from harness.nginx import Nginx
from reliability.attacks import client_from, flood, rss_mib
from tests.support.servers import KEYS, SECRET

pytestmark = pytest.mark.engine

MODEL = "shakespeare_char"


def sdk(server, key, retries=0):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=retries)


def raw(server, request: bytes) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client normalises the path or Host)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def test_sdk_without_a_valid_key_gets_authentication_error(secure):
    with pytest.raises(openai.AuthenticationError) as e:
        sdk(secure, "sk-wrong").completions.create(model=MODEL, prompt="A", max_tokens=2)
    assert e.value.body["code"] == "invalid_api_key"
    r = sdk(secure, "sk-carol").completions.create(model=MODEL, prompt="A", max_tokens=2)
    assert r.usage.completion_tokens == 2


def test_jwt_bearer_works_with_the_sdk(secure):
    token = jwt.encode({"sub": "dave", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    r = sdk(secure, token).completions.create(model=MODEL, prompt="A", max_tokens=2)
    assert r.choices[0].finish_reason == "length"


BODY = json.dumps({"model": MODEL, "prompt": "A", "max_tokens": 2}).encode()


@pytest.mark.parametrize(
    "target,host",
    [
        (b"//v1/completions", b"127.0.0.1"),
        (b"/v1/completions/", b"127.0.0.1"),
        (b"/v1%2Fcompletions", b"127.0.0.1"),
        (b"/%76%31/completions", b"127.0.0.1"),
        (b"/v1/completions", b"x/v2?"),
        (b"/health/../v1/completions", b"127.0.0.1"),
        (b"/./v1/completions", b"127.0.0.1"),
        (b"/v1/./completions", b"127.0.0.1"),
        (b"http://127.0.0.1/v1/completions", b"127.0.0.1"),
        (b"/generate", b"x/health?"),
        (b"/invocations", b"127.0.0.1"),
        (b"/health%00/../v1/completions", b"127.0.0.1"),
    ],
)
def test_path_and_host_tricks_never_reach_an_endpoint(secure, target, host):
    request = (
        b"POST " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
    )
    status, data = raw(secure, request)
    assert status in (400, 401, 404), data[:300]
    assert b"text_completion" not in data


def test_rate_limit_raises_rate_limit_error_with_headers(secure):
    client = sdk(secure, "sk-alice")  # rpm=2 per 4 s window
    time.sleep(4)  # a fresh window for this caller
    raw_response = client.completions.with_raw_response.create(
        model=MODEL, prompt="A", max_tokens=1
    )
    assert raw_response.headers["x-ratelimit-limit-requests"] == "2"
    assert raw_response.headers["x-ratelimit-remaining-requests"] == "1"
    client.completions.create(model=MODEL, prompt="A", max_tokens=1)
    with pytest.raises(openai.RateLimitError) as e:
        client.completions.create(model=MODEL, prompt="A", max_tokens=1)
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 4


def test_sdk_retry_honours_retry_after(secure):
    client = sdk(secure, "sk-alice", retries=2)
    time.sleep(4)
    for _ in range(2):
        client.completions.create(model=MODEL, prompt="A", max_tokens=1)
    started = time.monotonic()
    r = client.completions.create(model=MODEL, prompt="A", max_tokens=1)  # 429, waits, retries
    waited = time.monotonic() - started
    assert r.usage.completion_tokens == 1
    assert waited >= 0.9  # the SDK slept for the Retry-After it was given


def test_tokens_per_minute_count_real_tokens(secure):
    """bob: tpm=200 per 4 s. A request cut short by a stop string is charged what it used."""
    client = sdk(secure, "sk-bob")
    full = (
        client.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=40, temperature=0)
        .choices[0]
        .text
    )
    stop = full[5:8]
    # one token per character; the stop string was generated (and counted) but not returned
    used_short = len("ROMEO:") + full.index(stop) + len(stop)
    time.sleep(4)
    short = client.completions.create(
        model=MODEL, prompt="ROMEO:", max_tokens=100, temperature=0, stop=[stop]
    )
    assert short.choices[0].text == full[: full.index(stop)]
    assert short.usage.total_tokens == used_short
    nxt = client.completions.with_raw_response.create(model=MODEL, prompt="A", max_tokens=10)
    remaining = int(nxt.headers["x-ratelimit-remaining-tokens"])
    assert remaining == 200 - used_short - 11


def test_key_revoked_by_sighup_without_restart(secure, keyfile):
    client = sdk(secure, "sk-carol")
    assert client.models.list().data[0].id == MODEL
    keyfile.write_text(KEYS.replace("carol    sk-carol\n", ""))
    secure.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.models.list()
            time.sleep(0.2)
        except openai.AuthenticationError:
            break
    else:
        pytest.fail("revoked key still accepted 10 s after SIGHUP")
    keyfile.write_text(KEYS.replace("ops ", "@@@ broken"))  # broken: old keys stay
    secure.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert sdk(secure, "sk-ops").models.list().data
    assert "key file reload failed" in secure.log()
    keyfile.write_text(KEYS)


def test_usage_report_and_per_caller_metrics(secure):
    sdk(secure, "sk-bob").completions.create(model=MODEL, prompt="AB", max_tokens=3)
    limited = jwt.encode(
        {"sub": "erin", "exp": int(time.time()) + 60, "nanoserve": {"rpm": 1}},
        SECRET,
        algorithm="HS256",
    )
    sdk(secure, limited).models.list()
    with pytest.raises(openai.RateLimitError):
        sdk(secure, limited).models.list()
    with pytest.raises(openai.PermissionDeniedError):
        sdk(secure, "sk-bob").get("/usage", cast_to=object)
    report = httpx.get(secure.url + "/v1/usage", headers={"Authorization": "Bearer sk-ops"}).json()
    callers = {row["caller"]: row for row in report["data"]}
    assert (
        callers["bob"]["completion_tokens"] > 0
        and callers["jwt:erin"]["rejected_rate_limit_rpm"] == 1
    )
    metrics = httpx.get(secure.url + "/metrics", headers={"Authorization": "Bearer sk-ops"}).text
    assert 'nanoserve_caller_completion_tokens_total{caller="bob"}' in metrics
    assert "sk-bob" not in metrics and "sk-bob" not in secure.log()
    assert httpx.get(secure.url + "/metrics").status_code == 401
    # any tenant's key: 403, the metrics name every caller (the `metrics` or `admin` scope reads)
    bob = httpx.get(secure.url + "/metrics", headers={"Authorization": "Bearer sk-bob"})
    assert bob.status_code == 403 and bob.json()["error"]["code"] == "insufficient_permissions"


def _bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def nginx(secure, tmp_path):
    """deploy/nginx/nginx.conf in front of the keyed server (its listen port, upstream and pid
    file replaced), on 127.0.0.1: the address the server trusts to name clients."""
    proxy = Nginx(tmp_path, [secure.port])
    proxy.start()
    yield proxy
    proxy.stop()


def test_behind_nginx_a_guessing_client_locks_out_only_its_own_failures(secure, nginx):
    models = f"{nginx.url}/v1/models"
    ids = {"X-Request-Id": "lockout-test"}  # nginx passes it on: these requests' log lines
    with (
        client_from("127.0.0.2", headers=ids) as attacker,
        client_from("127.0.0.3", headers=ids) as victim,
    ):
        codes = [attacker.get(models, headers=_bearer(f"sk-{i}")).status_code for i in range(31)]
        assert codes == [401] * 30 + [429], codes
        # another machine behind the same nginx: its valid key, its scraper, its own typo
        assert victim.get(models, headers=_bearer("sk-victim")).status_code == 200
        assert victim.get(f"{nginx.url}/metrics", headers=_bearer("sk-prom")).status_code == 200
        assert victim.get(models, headers=_bearer("sk-typo")).status_code == 401
        # the attacker's own valid key still works; its guesses do not, whatever it claims
        assert attacker.get(models, headers=_bearer("sk-victim")).status_code == 200
        claims = {**_bearer("sk-guess-x"), "X-Forwarded-For": "127.0.0.3"}
        assert attacker.get(models, headers=claims).status_code == 429
        # straight to the server, past nginx: a header from an untrusted peer is ignored
        direct = attacker.get(f"{secure.url}/v1/models", headers=claims)
        assert direct.status_code == 429, direct.text
        assert "127.0.0.2" in direct.json()["error"]["message"]
    lines = [json.loads(ln) for ln in secure.log().splitlines() if "lockout-test" in ln]
    seen = {(ln["client"], ln["status"]) for ln in lines if ln.get("route") == "/v1/models"}
    # every request was logged under its client's address, none under nginx's (127.0.0.1)
    assert seen == {("127.0.0.2", 401), ("127.0.0.2", 429), ("127.0.0.2", 200),
                    ("127.0.0.3", 200), ("127.0.0.3", 401)}, seen  # fmt: skip


def test_a_pipelining_flood_does_not_grow_the_real_server(secure):
    before = rss_mib(secure.proc.pid)
    dropped = [flood(secure.url, 4_000_000) for _ in range(4)]  # none reads an answer
    grown = rss_mib(secure.proc.pid) - before
    assert all(dropped), dropped
    assert grown < 30, f"the server grew {grown:.0f} MiB under a 16 MB pipelining flood"
    assert httpx.get(f"{secure.url}/v1/models", headers=_bearer("sk-victim")).status_code == 200

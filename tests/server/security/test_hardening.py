"""Regression tests for the attack run's findings: each failed on the code before its fix."""

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time

import httpx
import jwt
import pytest
from nanoserve.server.security.keyfile import KeyFileError, digest, parse_key_file
from nanoserve.server.security.lockout import Lockout, lockout_key
from starlette.websockets import WebSocketDisconnect

from harness.probes import burst, completion
from harness.processes import Redis, free_port
from reliability.attacks import read_until_closed
from tests.support.fake_engine import FakeEngine, fake_app
from tests.support.servers import REPO

SECRET = "hardening-secret-0123456789abcdef0123"
KEY = {"Authorization": "Bearer sk-t"}


def body(max_tokens: int = 2) -> dict:
    return completion(max_tokens)


async def _burst(urls: list[str], n: int, payload: dict, headers: dict) -> list[int]:
    """`n` requests at once, spread over `urls`; their status codes."""
    return [r.status_code for r in await burst(urls, n, payload, headers)]


@pytest.fixture(params=["memory", "redis"])
def shared(request, fake_server):
    """Start replicas sharing one limit storage: one process on memory, two on Redis."""

    def start(*flags: str, delay: str = "0") -> list[str]:
        common = ["--fake-delay", delay, "--api-key", "sk-t", *flags]
        if request.param == "memory":
            return [fake_server(*common).url]
        url = request.getfixturevalue("redis_url") + f"/{free_port() % 16}"  # a fresh db
        storage = ["--ratelimit-storage", url]
        return [fake_server(*common, *storage).url for _ in range(2)]

    return start


@pytest.mark.parametrize(
    "flags,max_tokens,delay,admitted",
    [
        (["--tpm", "40"], 30, "0", 1),  # 3 + 30 = 33 tokens each: one fits in 40
        (["--rpm", "5"], 2, "0", 5),
        (["--concurrency", "2"], 40, "0.05", 2),  # each holds its slot for ~2 s
    ],
    ids=["tpm", "rpm", "concurrency"],
)
def test_limits_hold_under_24_concurrent_requests(shared, flags, max_tokens, delay, admitted):
    urls = shared(*flags, "--ratelimit-window", "60", delay=delay)
    codes = asyncio.run(_burst(urls, 24, body(max_tokens), KEY))
    assert sorted(codes) == [200] * admitted + [429] * (24 - admitted), codes


def test_a_redis_blip_does_not_keep_a_concurrency_slot(tmp_path, fake_server):
    redis = Redis(tmp_path, persistent=True).start()  # a restart keeps the counts (AOF)
    try:
        url = fake_server(
            "--fake-delay", "0.05", "--api-key", "sk-t", "--concurrency", "1",
            "--ratelimit-storage", redis.url,
        ).url  # fmt: skip

        def slow():  # holds the caller's only slot for ~1.5 s
            return httpx.post(f"{url}/v1/completions", json=body(30), headers=KEY, timeout=30)

        async def blip():
            pending = asyncio.create_task(asyncio.to_thread(slow))
            await asyncio.sleep(0.5)
            redis.kill()  # Redis gone while the request runs: its release will fail
            return await pending

        assert asyncio.run(blip()).status_code == 200
        redis.start()  # back, count restored
        deadline, codes = time.monotonic() + 20, []
        while time.monotonic() < deadline:
            codes.append(httpx.post(f"{url}/v1/completions", json=body(), headers=KEY).status_code)
            if codes[-1] == 200:
                break
            time.sleep(0.5)
        # before the fix: 429 for the key's 10-minute TTL (the slot was never given back)
        assert codes[-1] == 200, codes
    finally:
        redis.kill()


def test_a_non_streaming_client_that_leaves_is_charged_what_was_generated(tmp_path, fake_server):
    keys = tmp_path / "keys"
    keys.write_text("alice sk-alice\nops sk-ops admin\n")
    keys.chmod(0o600)
    url = fake_server("--fake-delay", "0.05", "--api-key-file", str(keys)).url
    with pytest.raises(httpx.ReadTimeout):  # 60 tokens take 3 s; leave after 1
        httpx.post(f"{url}/v1/completions", json=body(60), headers=_bearer("sk-alice"), timeout=1)
    time.sleep(0.5)
    rows = httpx.get(f"{url}/v1/usage", headers=_bearer("sk-ops")).json()["data"]
    alice = next(r for r in rows if r["caller"] == "alice")
    assert alice["prompt_tokens"] == 3
    assert 5 <= alice["completion_tokens"] < 60  # before the fix: 0


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_metrics_need_the_metrics_or_admin_scope(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("tenant sk-ten\nprom sk-prom metrics\nops sk-ops admin\n")
    keys.chmod(0o600)
    with fake_app(api_key_file=keys, jwt_secret=SECRET) as c:
        assert c.get("/metrics", headers=_bearer("sk-ten")).status_code == 403
        assert c.get("/metrics", headers=_bearer("sk-prom")).status_code == 200
        assert c.get("/metrics", headers=_bearer("sk-ops")).status_code == 200
        scraper = jwt.encode(
            {"sub": "p", "exp": int(time.time()) + 60, "scope": "metrics"}, SECRET, "HS256"
        )
        assert c.get("/metrics", headers=_bearer(scraper)).status_code == 200
        assert c.get("/v1/usage", headers=_bearer("sk-prom")).status_code == 403  # metrics only


def _raw(url: str, data: bytes, wait: float = 5) -> bytes:
    """Send raw bytes, return what comes back before the server closes (or `wait` passes)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(data)
        return read_until_closed(s, wait)[0]


def test_request_heads_are_bounded_in_size_count_and_time(fake_server):
    url = fake_server("--api-key", "sk-t", "--header-timeout", "1").url
    big = b"GET /live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    assert _raw(url, big).startswith(b"HTTP/1.1 431 ")
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(150))
    r = _raw(url, b"GET /live HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert r.startswith(b"HTTP/1.1 431 ") and b"more than 100 header lines" in r
    started = time.monotonic()
    r = _raw(url, b"GET /live HTTP/1.1\r\nHost: x\r\n", wait=10)  # never finishes its head
    assert r.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 5
    assert httpx.get(f"{url}/live").status_code == 200  # and the server is fine


def test_a_head_sent_in_pieces_is_refused_once_over_the_bound(fake_server):
    # each piece arrives in its own read: the protocol counts them before the head is complete
    # (the middleware only sees heads that completed), and closes without waiting for the rest
    url = fake_server("--api-key", "sk-t", "--max-header-bytes", "4096").url
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        for _ in range(20):
            try:
                s.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
            except OSError:  # closed on us: what the test wants
                break
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    assert b"larger than 4096 bytes" in answer
    assert httpx.get(f"{url}/live").status_code == 200  # and the server is fine


def test_a_chunked_body_over_the_cap_is_413():
    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    with fake_app(api_keys=["sk-t"], max_request_bytes=4096) as c:
        r = c.post("/v1/completions", content=chunks(), headers=KEY)
    assert r.status_code == 413 and "4096" in r.json()["error"]["message"]


def test_a_tokens_429_sends_each_ratelimit_header_once():
    with fake_app(api_keys=["sk-t"], tpm=10) as c:
        assert c.post("/v1/completions", json=body(5), headers=KEY).status_code == 200
        r = c.post("/v1/completions", json=body(5), headers=KEY)
    assert r.status_code == 429
    for name in ("x-ratelimit-remaining-tokens", "x-ratelimit-limit-tokens", "retry-after"):
        assert len(r.headers.get_list(name)) == 1, (name, r.headers.get_list(name))


def test_websockets_are_refused():
    with fake_app(api_keys=["sk-t"]) as c, pytest.raises(WebSocketDisconnect) as e:  # noqa: SIM117
        with c.websocket_connect("/v1/completions", headers=KEY):
            pass
    assert e.value.code == 1008


def test_a_hash_inside_a_key_is_part_of_it(tmp_path):
    path = tmp_path / "keys"
    path.write_text("alice sk-abc#def   # the comment starts after white space\n# whole line\n")
    [entry] = parse_key_file(path)
    assert entry.digest == digest("sk-abc#def")


def test_key_file_problems_are_clear(tmp_path, caplog):
    bad = tmp_path / "latin1"
    bad.write_bytes(b"alice sk-caf\xe9\n")
    with pytest.raises(KeyFileError, match="not UTF-8"):
        parse_key_file(bad)
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n")
    with pytest.raises(KeyFileError, match="holds no keys"), fake_app(api_key_file=empty):
        pass
    shared = tmp_path / "shared"
    shared.write_text("alice sk-a\n")
    shared.chmod(0o644)
    with caplog.at_level(logging.WARNING), fake_app(api_key_file=shared) as c:
        assert "readable by other users" in caplog.text
        bad.replace(shared)  # SIGHUP with a broken file: the old keys stay
        assert c.app.state.auth.reload() is False
        assert c.get("/v1/models", headers=_bearer("sk-a")).status_code == 200


def test_key_file_readable_by_its_own_group_is_not_a_leak(tmp_path, caplog):
    # Kubernetes mounts a Secret 0440 root:<fsGroup> and the server runs in that group
    keys = tmp_path / "keys"
    keys.write_text("alice sk-a\n")
    keys.chmod(0o640)
    os.chown(keys, -1, os.getgid())
    with caplog.at_level(logging.WARNING), fake_app(api_key_file=keys):
        assert "readable by other users" not in caplog.text
    keys.chmod(0o604)
    with caplog.at_level(logging.WARNING), fake_app(api_key_file=keys):
        assert "readable by other users" in caplog.text


def test_jwt_callers_have_their_own_namespace_and_need_a_subject(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("alice sk-alice\nops sk-ops admin\n")
    keys.chmod(0o600)
    now = int(time.time())
    with fake_app(api_key_file=keys, jwt_secret=SECRET, jwt_algorithms=["hs256"]) as c:
        token = jwt.encode({"sub": "alice", "exp": now + 60}, SECRET, "HS256")
        assert c.post("/v1/completions", json=body(), headers=_bearer(token)).status_code == 200
        rows = {r["caller"] for r in c.get("/v1/usage", headers=_bearer("sk-ops")).json()["data"]}
        assert "jwt:alice" in rows and "alice" not in rows
        empty = jwt.encode({"sub": "", "exp": now + 60}, SECRET, "HS256")
        assert c.get("/v1/models", headers=_bearer(empty)).status_code == 401


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--jwt-secret", "x"], "at least 32 bytes"),
        (["--jwt-secret", SECRET, "--jwt-algorithms", "HS999"], "unknown JWT algorithm"),
        (["--api-key", "sk-t", "--jwt-secret", "short-secret-value-zz"], "at least 32 bytes"),
    ],
)
def test_bad_jwt_settings_are_refused_without_echoing_secrets(flags, message):
    out = subprocess.run(
        [sys.executable, "-m", "nanoserve.server", *flags],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 2 and message in out.stderr, out.stderr
    for secret in ("short-secret-value-zz", "sk-t", SECRET):
        assert secret not in out.stderr


def test_failed_authentications_are_limited_per_address_and_valid_keys_still_pass():
    with fake_app(api_keys=["sk-t"], max_auth_failures=3) as c:
        codes = [c.get("/v1/models", headers=_bearer("wrong")).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        # credentials are checked first: the address's lockout refuses only failed attempts
        assert c.get("/v1/models", headers=KEY).status_code == 200
        locked = c.get("/v1/models", headers=_bearer("wrong-again"))
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        assert locked.json()["error"]["code"] == "too_many_failed_authentications"


def test_lockout_counts_canonical_addresses_and_ipv6_by_64():
    lock = Lockout(max_failures=2)
    for spelling in ("2001:db8::1", "2001:db8:0:0:ffff::2", "2001:0db8::3"):  # one /64
        lock.failed(spelling)
    assert lock.retry_after("2001:db8::99") is not None
    assert lock.retry_after("2001:db8:0:1::1") is None  # the next /64
    lock.failed("::ffff:10.0.0.1")  # an IPv4-mapped address is the IPv4 address
    lock.failed("10.0.0.1")
    assert lock.retry_after("10.0.0.1") is not None
    assert set(lock._seen) == {"2001:db8::/64", "10.0.0.1"}
    assert lockout_key("x" * 30_000) == "unknown"  # never a client-written string


def test_lockout_memory_is_bounded():
    lock = Lockout(max_failures=1, max_addresses=100)
    for i in range(1000):
        lock.failed(f"10.1.{i // 256}.{i % 256}")
    assert len(lock._seen) == 100 and lock.retry_after("10.1.3.231") is not None


def test_engine_is_never_reached_by_refused_requests():
    # (sanity for the above: a refusal costs the engine nothing)
    engine = FakeEngine()
    with fake_app(engine, api_keys=["sk-t"], max_auth_failures=1) as c:
        assert c.post("/v1/completions", json=body(), headers=_bearer("wrong")).status_code == 401
        assert c.post("/v1/completions", json=body(), headers=_bearer("again")).status_code == 429
    assert engine.seen == []

"""server/transport/connection.py and the client address, on a real server process (real
uvicorn, app and limiter; a fake engine: none of this reaches it). Each test is an attack run's
reproduction and failed on the code before its fix."""

import contextlib
import json
import time

import httpx

from reliability.attacks import client_from, connect, flood, read_until_closed, rss_mib

KEY = {"Authorization": "Bearer sk-t"}


def test_a_pipelining_flood_is_dropped_without_growing_the_server(fake_server):
    server = fake_server("--api-key", "sk-t")
    before = rss_mib(server.proc.pid)
    dropped = [flood(server.url, 4_000_000) for _ in range(5)]
    grown = rss_mib(server.proc.pid) - before
    assert all(dropped), dropped
    assert grown < 30, f"the server grew {grown:.0f} MiB under a 20 MB pipelining flood"
    assert httpx.get(f"{server.url}/v1/models", headers=KEY).status_code == 200


def test_a_few_pipelined_requests_are_all_answered(fake_server):
    url = fake_server("--api-key", "sk-t").url
    with connect(url) as s:
        s.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n" * 5)
        s.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out, closed = read_until_closed(s, 10)
    assert closed and out.count(b"HTTP/1.1 200 OK") == 6


def test_an_answer_before_the_body_closes_the_connection(fake_server):
    # 401 (bad key), 413 (declared too large) and 200 (an open path) are answered before the
    # body is read; one body byte used to cancel the keep-alive timer and hold it forever
    url = fake_server("--api-key", "sk-t", "--max-request-bytes", "2048").url
    heads = [
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
        b"GET /live HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
    ]
    sockets = [connect(url) for _ in range(10) for _ in heads]
    try:
        for i, s in enumerate(sockets):
            s.sendall(heads[i % 3])
        time.sleep(1)  # every answer is out
        started = time.monotonic()
        results = []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.sendall(b"{")  # one body byte, then nothing
            results.append(read_until_closed(s, 5))
        codes = [int(out.split(b" ", 2)[1]) for out, _ in results]
        assert sorted(set(codes)) == [200, 401, 413], codes
        assert all(closed for _, closed in results), "a connection was held open"
        assert time.monotonic() - started < 5
    finally:
        for s in sockets:
            s.close()


def test_a_body_that_never_arrives_times_out_and_frees_the_callers_slot(fake_server):
    url = fake_server("--api-key", "sk-t", "--concurrency", "1", "--body-timeout", "1").url
    with connect(url) as s:
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-t\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b'{"model": '
        )
        started = time.monotonic()
        out, closed = read_until_closed(s, 10)
        waited = time.monotonic() - started
    assert closed and out.startswith(b"HTTP/1.1 408 "), out
    assert 0.8 < waited < 4, waited
    assert b"not received within 1 s" in out
    body = {"model": "fake", "prompt": "abc", "max_tokens": 2}
    r = httpx.post(f"{url}/v1/completions", json=body, headers=KEY, timeout=10)
    assert r.status_code == 200, r.text  # the caller's one concurrency slot is free again


def test_connections_over_the_cap_get_503_at_once(fake_server):
    url = fake_server("--api-key", "sk-t", "--max-connections", "4", "--header-timeout", "60").url
    idle = [connect(url) for _ in range(4)]
    try:
        time.sleep(0.5)
        with connect(url) as extra:
            out, closed = read_until_closed(extra, 5)
        assert closed and out.startswith(b"HTTP/1.1 503 "), out
        assert json.loads(out.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "server_error"
    finally:
        for s in idle:
            s.close()
    time.sleep(0.5)
    assert httpx.get(f"{url}/live", timeout=10).status_code == 200


def _locked_out_after(client: httpx.Client, url: str, n: int, headers=None) -> list[int]:
    return [
        client.get(
            f"{url}/v1/models", headers={"Authorization": f"Bearer sk-guess{i}", **(headers or {})}
        ).status_code
        for i in range(n)
    ]


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_named_proxy(fake_server):
    url = fake_server("--api-key", "sk-t", "--max-auth-failures", "5").url
    with client_from("127.0.0.2") as attacker, client_from("127.0.0.3") as victim:
        # a new claimed address on every guess is still one address
        codes = _locked_out_after(attacker, url, 7, None)
        assert codes == [401] * 5 + [429] * 2
        forged = [{"X-Forwarded-For": f"10.9.{i}.9"} for i in range(3)]
        assert [_locked_out_after(attacker, url, 1, h)[0] for h in forged] == [429] * 3
        # naming the victim's address locks nobody else out
        assert _locked_out_after(attacker, url, 1, {"X-Forwarded-For": "127.0.0.3"}) == [429]
        bad = {"Authorization": "Bearer bad"}
        assert victim.get(f"{url}/v1/models", headers=bad).status_code == 401
        assert attacker.get(f"{url}/v1/models", headers=KEY).status_code == 200  # valid: passes


def test_a_named_proxy_sets_the_client_and_junk_from_it_is_bounded(fake_server):
    server = fake_server("--api-key", "sk-t", "--forwarded-allow-ips", "127.0.0.2/32")
    with client_from("127.0.0.2") as proxy:
        r = proxy.get(f"{server.url}/v1/models", headers={"X-Forwarded-For": "192.0.2.7"})
        assert r.status_code == 401
        before = rss_mib(server.proc.pid)
        for i in range(300):  # 30 KB values, each different: not an address
            junk = f"{i}" + "a" * 30_000
            proxy.get(f"{server.url}/v1/models", headers={"X-Forwarded-For": junk, **KEY})
        grown = rss_mib(server.proc.pid) - before
    assert grown < 20, f"grew {grown:.0f} MiB"
    lines = [json.loads(ln) for ln in server.log().splitlines() if '"nanoserve.access"' in ln]
    clients = [ln["client"] for ln in lines if ln.get("route") == "/v1/models"]
    assert clients[0] == "192.0.2.7" and set(clients[1:]) == {"unknown"}, set(clients)

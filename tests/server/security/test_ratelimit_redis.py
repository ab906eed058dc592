"""Shared limits across processes through a real Redis, and what happens when Redis is gone."""

import re

import httpx
import pytest

KEY = {"Authorization": "Bearer sk-shared"}
BODY = {"model": "fake", "prompt": "abc", "max_tokens": 2}


def test_two_processes_enforce_one_combined_limit(redis_url, fake_server):
    flags = (
        "--api-key",
        "sk-shared",
        "--rpm",
        "5",
        "--ratelimit-window",
        "60",
        "--ratelimit-storage",
        redis_url,
    )
    a, b = fake_server(*flags).url, fake_server(*flags).url
    codes = [
        httpx.post(f"{url}/v1/completions", json=BODY, headers=KEY).status_code
        for url in (a, b, a, b, a, b, a)
    ]
    assert codes == [200, 200, 200, 200, 200, 429, 429]


def test_tokens_per_minute_are_shared_too(redis_url, fake_server):
    flags = (
        "--api-key",
        "sk-shared",
        "--tpm",
        "12",
        "--ratelimit-window",
        "60",
        "--ratelimit-storage",
        redis_url + "/1",
    )
    a, b = fake_server(*flags).url, fake_server(*flags).url
    r = httpx.post(f"{a}/v1/completions", json=BODY, headers=KEY)  # 3 + 2 tokens
    assert r.headers["x-ratelimit-remaining-tokens"] == "7"
    r = httpx.post(f"{b}/v1/completions", json=BODY, headers=KEY)
    assert r.headers["x-ratelimit-remaining-tokens"] == "2"
    assert httpx.post(f"{a}/v1/completions", json=BODY, headers=KEY).status_code == 429


@pytest.mark.parametrize("fail_open", [False, True])
def test_unreachable_redis_fails_closed_by_default(fake_server, fail_open):
    from tests.support.servers import free_port

    flags = [
        "--api-key",
        "sk-shared",
        "--rpm",
        "5",
        "--ratelimit-storage",
        f"redis://127.0.0.1:{free_port()}",
        "--metrics-open",
    ]  # nothing listens
    if fail_open:
        flags.append("--ratelimit-fail-open")
    url = fake_server(*flags).url
    r = httpx.post(f"{url}/v1/completions", json=BODY, headers=KEY, timeout=30)
    if fail_open:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "5"
        assert r.json()["error"]["code"] == "server_overloaded"
    metrics = httpx.get(f"{url}/metrics", headers=KEY).text
    m = re.search(r"^nanoserve_ratelimit_storage_errors_total (\S+)$", metrics, re.M)
    assert m and float(m.group(1)) >= 1

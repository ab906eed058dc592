"""Authentication, rate limits and usage against a fake engine (fast; no vLLM)."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.routing import APIRoute
from nanoserve.server.api.playground import PLAYGROUND_PATHS
from nanoserve.server.cli import auth_problem
from nanoserve.server.security.guard import OPEN_PATHS
from nanoserve.server.security.keyfile import KeyFileError, digest, parse_key_file
from nanoserve.server.settings import Settings

from tests.support.fake_engine import FakeEngine, fake_app

SECRET = "s3cret-for-tests-only-0123456789abcdef"
BODY = {"model": "fake", "prompt": "abc", "max_tokens": 2}


@pytest.fixture
def keyfile(tmp_path):
    path = tmp_path / "keys"
    path.write_text(
        "# id   key   limits\n"
        "alice  sk-alice  rpm=3\n"
        f"bob    sha256:{digest('sk-bob').hex()}  tpm=40\n"
        "ops    sk-ops  admin   # an admin\n"
        "slow   sk-slow concurrency=1\n"
    )
    return path


@pytest.fixture
def client(keyfile):
    # many deliberate 401s here: the per-address lockout has its own test
    with fake_app(
        api_key_file=keyfile,
        api_keys=["sk-plain"],
        jwt_secret=SECRET,
        ratelimit_window=2,
        max_auth_failures=10_000,
    ) as c:
        yield c


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def hs256(**claims):
    claims.setdefault("sub", "carol")
    claims.setdefault("exp", int(time.time()) + 60)
    return jwt.encode(claims, SECRET, algorithm="HS256")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(claims: dict, key: bytes, alg: str = "HS256") -> str:
    """Sign by hand, for tokens PyJWT rightly refuses to make."""
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    digestmod = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(key, f"{head}.{body}".encode(), digestmod).digest()
    return f"{head}.{body}.{b64url(sig)}"


def assert_401(r):
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "invalid_api_key"
    return r.json()


def test_every_route_but_probes_needs_credentials(client):
    routes = [r for r in client.app.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 8
    for route in routes:
        path = route.path.replace("{model_id:path}", "fake")
        for method in route.methods:
            # the playground's static files are open; tests/server/api/test_playground.py checks
            # that they are only those files and that the API they call is not
            if path in OPEN_PATHS | PLAYGROUND_PATHS:
                continue
            bodies = [
                assert_401(client.request(method, path, json=BODY, headers=h))
                for h in (
                    {},
                    bearer("wrong"),
                    {"Authorization": "Basic c2stcGxhaW4="},
                    {"Authorization": "Bearer"},
                )
            ]
            assert all(b == bodies[0] for b in bodies), "missing and wrong must look the same"


def test_docs_and_metrics_need_credentials_unless_opened(keyfile):
    with fake_app(api_keys=["k"]) as c:
        for path in ("/docs", "/openapi.json", "/metrics"):
            assert_401(c.get(path))
    with fake_app(api_keys=["k"], metrics_open=True) as c:
        assert c.get("/metrics").status_code == 200


def test_probes_are_open(client):
    for path in ("/", "/health", "/live", "/ready"):
        assert client.get(path).status_code == 200, path


def test_keys_from_flag_and_file_and_hash(client):
    for key in ("sk-plain", "sk-alice", "sk-bob", "sk-ops"):
        assert client.post("/v1/completions", json=BODY, headers=bearer(key)).status_code == 200


def test_valid_jwt_is_accepted_with_sub_as_caller(client):
    r = client.post("/v1/completions", json=BODY, headers=bearer(hs256()))
    assert r.status_code == 200, r.text
    report = client.get("/v1/usage", headers=bearer("sk-ops")).json()
    assert any(row["caller"] == "jwt:carol" and row["requests"] == 1 for row in report["data"])


# Each token is made by the test that uses it (at its own `now`): made at import time, an
# "expired" or "not yet valid" token would change meaning while a long suite runs.
BAD_JWTS = {
    "expired": lambda now: hs256(exp=now - 120),  # beyond the 30 s leeway
    "not-yet-valid": lambda now: hs256(nbf=now + 120),
    "wrong-signature": lambda now: jwt.encode(
        {"sub": "x", "exp": now + 60}, "other-secret-0123456789abcdef0123", algorithm="HS256"
    ),
    "alg-none": lambda now: jwt.encode({"sub": "x", "exp": now + 60}, None, algorithm="none"),
    "alg-not-allowed": lambda now: forge({"sub": "x", "exp": now + 60}, SECRET.encode(), "HS512"),
    "missing-exp": lambda now: jwt.encode({"sub": "x"}, SECRET, algorithm="HS256"),
    "missing-sub": lambda now: jwt.encode({"exp": now + 60}, SECRET, algorithm="HS256"),
}


@pytest.mark.parametrize("kind", BAD_JWTS)
def test_bad_jwts_are_401(client, kind):
    token = BAD_JWTS[kind](int(time.time()))
    assert_401(client.post("/v1/completions", json=BODY, headers=bearer(token)))


def test_hs_rs_confusion_is_401(tmp_path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "pub.pem").write_bytes(pem)
    with fake_app(jwt_public_key_file=tmp_path / "pub.pem") as c:
        good = jwt.encode({"sub": "rs", "exp": int(time.time()) + 60}, private, algorithm="RS256")
        assert c.post("/v1/completions", json=BODY, headers=bearer(good)).status_code == 200
        # the classic attack: sign with HS256 using the public key as the HMAC secret
        # (PyJWT refuses to do this, so forge it by hand)
        forged = forge({"sub": "evil", "exp": int(time.time()) + 60}, pem)
        assert_401(c.post("/v1/completions", json=BODY, headers=bearer(forged)))


def test_audience_and_issuer_are_enforced_when_set():
    with fake_app(jwt_secret=SECRET, jwt_audience="nanoserve", jwt_issuer="https://idp") as c:
        ok = hs256(aud="nanoserve", iss="https://idp")
        assert c.post("/v1/completions", json=BODY, headers=bearer(ok)).status_code == 200
        assert_401(
            c.post(
                "/v1/completions", json=BODY, headers=bearer(hs256(aud="other", iss="https://idp"))
            )
        )
        assert_401(c.post("/v1/completions", json=BODY, headers=bearer(hs256(aud="nanoserve"))))


def test_usage_needs_admin(client):
    assert client.get("/v1/usage", headers=bearer("sk-alice")).status_code == 403
    admin_jwt = hs256(sub="root", scope="completions admin")
    assert client.get("/v1/usage", headers=bearer(admin_jwt)).status_code == 200


def test_key_file_reload_revokes_and_broken_file_keeps_keys(client, keyfile):
    auth = client.app.state.auth
    assert client.get("/v1/models", headers=bearer("sk-alice")).status_code == 200
    keyfile.write_text("ops sk-ops admin\n")
    assert auth.reload() is True
    assert_401(client.get("/v1/models", headers=bearer("sk-alice")))
    keyfile.write_text("ops sk-ops admin\nbroken-line-without-key\n")
    assert auth.reload() is False
    assert client.get("/v1/models", headers=bearer("sk-ops")).status_code == 200


def test_key_file_errors_name_the_line(tmp_path):
    path = tmp_path / "keys"
    path.write_text("a k1\na k2\n")
    with pytest.raises(KeyFileError, match=r"keys:2: duplicate key id 'a'"):
        parse_key_file(path)
    path.write_text("a k1 rpm=lots\n")
    with pytest.raises(KeyFileError, match=r"keys:1: unknown option 'rpm=lots'"):
        parse_key_file(path)


def test_rpm_limit_is_429_with_headers_then_recovers(client):
    h = bearer("sk-alice")  # rpm=3 per 2 s window in this fixture
    statuses = [client.get("/v1/models", headers=h) for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert statuses[0].headers["x-ratelimit-limit-requests"] == "3"
    assert statuses[0].headers["x-ratelimit-remaining-requests"] == "2"
    limited = statuses[3]
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(limited.headers["retry-after"]) <= 2
    assert int(limited.headers["retry-after-ms"]) == 1000 * int(limited.headers["retry-after"])
    assert limited.headers["x-ratelimit-reset-requests"].endswith("s")
    time.sleep(int(limited.headers["retry-after"]) + 0.2)
    assert client.get("/v1/models", headers=h).status_code == 200


def test_tpm_counts_real_tokens_not_the_reservation(client):
    h = bearer("sk-bob")  # tpm=40 per window
    # reserves 3 + 30 = 33, but the fake engine stops at... max_tokens; ask for 30, use 30
    r = client.post("/v1/completions", json={**BODY, "max_tokens": 30}, headers=h)
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit-tokens"] == "40"
    assert r.headers["x-ratelimit-remaining-tokens"] == "7"
    r = client.post("/v1/completions", json={**BODY, "max_tokens": 30}, headers=h)
    assert r.status_code == 429 and "tokens per minute" in r.json()["error"]["message"]
    time.sleep(2.2)
    # an echo-scoring request reserves only its prompt: 3 tokens
    r = client.post("/v1/completions", json={**BODY, "max_tokens": 0, "echo": True}, headers=h)
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-tokens"] == "37"


def test_unused_reservation_is_given_back():
    engine = FakeEngine(stop_after=5)  # every generation ends after 5 tokens ("stop")
    with fake_app(engine, api_keys=["k"], tpm=100, ratelimit_window=30) as c:
        r = c.post("/v1/completions", json={**BODY, "max_tokens": 20}, headers=bearer("k"))
        assert r.json()["usage"]["total_tokens"] == 8
        assert r.headers["x-ratelimit-remaining-tokens"] == str(100 - 23)  # 3 + 20 reserved
        r = c.post("/v1/completions", json={**BODY, "max_tokens": 1}, headers=bearer("k"))
        assert r.headers["x-ratelimit-remaining-tokens"] == str(100 - 8 - 4)  # 15 given back


def test_request_over_the_whole_tpm_is_400_not_429(client):
    r = client.post("/v1/completions", json={**BODY, "max_tokens": 60}, headers=bearer("sk-bob"))
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_concurrency_limit(keyfile):
    import threading

    engine = FakeEngine(delay=0.05)  # 20 tokens take ~1 s
    with fake_app(engine, api_key_file=keyfile) as c:
        results = {}

        def slow():
            results["slow"] = c.post(
                "/v1/completions", json={**BODY, "max_tokens": 20}, headers=bearer("sk-slow")
            ).status_code

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.3)
        second = c.post("/v1/completions", json=BODY, headers=bearer("sk-slow"))
        t.join()
        assert results["slow"] == 200
        assert second.status_code == 429 and "concurrent" in second.json()["error"]["message"]
        assert c.post("/v1/completions", json=BODY, headers=bearer("sk-slow")).status_code == 200


def test_usage_and_rejections_are_counted_per_caller(client):
    h = bearer("sk-alice")
    for _ in range(4):
        client.post("/v1/completions", json=BODY, headers=h)
    rows = {
        row["caller"]: row
        for row in client.get("/v1/usage", headers=bearer("sk-ops")).json()["data"]
    }
    assert rows["alice"]["requests"] == 3
    assert rows["alice"]["prompt_tokens"] == 9 and rows["alice"]["completion_tokens"] == 6
    assert rows["alice"]["rejected_rate_limit_rpm"] == 1
    reg = client.app.state.runtime.metrics.registry
    assert (
        reg.get_sample_value("nanoserve_caller_completion_tokens_total", {"caller": "alice"}) == 6
    )
    assert (
        reg.get_sample_value(
            "nanoserve_caller_rejections_total", {"caller": "alice", "reason": "rate_limit_rpm"}
        )
        == 1
    )


def test_caller_labels_are_bounded(keyfile):
    with fake_app(jwt_secret=SECRET, usage_max_callers=2) as c:
        for sub in ("u1", "u2", "u3", "u4"):
            c.get("/v1/models", headers=bearer(hs256(sub=sub)))
        reg = c.app.state.runtime.metrics.registry
        assert reg.get_sample_value("nanoserve_caller_requests_total", {"caller": "jwt:u2"}) == 1
        assert reg.get_sample_value("nanoserve_caller_requests_total", {"caller": "other"}) == 2
        assert reg.get_sample_value("nanoserve_caller_requests_total", {"caller": "jwt:u3"}) is None


def test_jwt_claims_carry_limits(client):
    token = hs256(sub="limited", nanoserve={"rpm": 1})
    assert client.get("/v1/models", headers=bearer(token)).status_code == 200
    assert client.get("/v1/models", headers=bearer(token)).status_code == 429


def test_starting_without_credentials_or_publicly_without_auth_is_refused():
    assert "no credentials configured" in auth_problem(Settings())
    assert "refusing" in auth_problem(Settings(no_auth=True, host="0.0.0.0"))
    assert auth_problem(Settings(no_auth=True, host="0.0.0.0", allow_public_no_auth=True)) is None
    assert auth_problem(Settings(no_auth=True)) is None
    assert auth_problem(Settings(api_keys=["k"], host="0.0.0.0")) is None


def test_conflicting_jwt_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        Settings(jwt_secret="x", jwt_public_key_file=tmp_path / "k.pem")
    with pytest.raises(ValueError, match="RS"):
        Settings(jwt_public_key_file=tmp_path / "k.pem", jwt_algorithms="HS256")

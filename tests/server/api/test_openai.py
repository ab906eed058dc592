"""Routing, validation and response shapes against a fake engine (fast; no vLLM)."""

import json

import pytest

from harness.processes import free_port
from tests.support.fake_engine import FakeEngine, fake_app


@pytest.fixture
def engine():
    return FakeEngine()


@pytest.fixture
def client(engine):
    with fake_app(engine, max_request_bytes=4096, api_keys=["sk-test"]) as c:
        c.headers["Authorization"] = "Bearer sk-test"
        yield c


def complete(client, **body):
    body.setdefault("model", "fake")
    return client.post("/v1/completions", json=body)


def assert_invalid(r, param, status=400, code=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    assert err["type"] == "invalid_request_error"
    assert err["message"]
    if code:
        assert err["code"] == code


def test_completion_shape_and_usage(client):
    r = complete(client, prompt="abc", max_tokens=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["model"] == "fake"
    assert body["choices"] == [
        {"index": 0, "text": "def", "logprobs": None, "finish_reason": "length"}
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


def test_choices_are_prompt_major(client):
    r = complete(client, prompt=["a", "k"], n=2, max_tokens=1)
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    assert [c["text"] for c in choices] == ["b", "c", "l", "m"]
    assert r.json()["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}


def test_echo_with_logprobs_scores_the_prompt(client):
    r = complete(client, prompt="abc", max_tokens=0, echo=True, logprobs=1)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["text"] == "abc"
    lp = choice["logprobs"]
    assert lp["tokens"] == ["a", "b", "c"]
    assert lp["token_logprobs"] == [None, -0.5, -0.5]
    assert lp["top_logprobs"][0] is None
    assert lp["text_offset"] == [0, 1, 2]
    assert r.json()["usage"]["completion_tokens"] == 0


def test_stream_events_end_with_done(client):
    with client.stream(
        "POST",
        "/v1/completions",
        json={
            "model": "fake",
            "prompt": ["a", "b"],
            "max_tokens": 2,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    finishes = [ch["index"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert sorted(finishes) == [0, 1]
    assert all(c["usage"] is None for c in chunks[:-1])
    text = {
        i: "".join(ch["text"] for c in chunks for ch in c["choices"] if ch["index"] == i)
        for i in (0, 1)
    }
    assert text == {0: "bc", 1: "cd"}


@pytest.mark.parametrize(
    "body,param",
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [[]]}, "prompt"),
        ({"prompt": [99]}, "prompt"),
        ({"prompt": "abc", "temperature": -1}, "temperature"),
        ({"prompt": "abc", "top_p": 0}, "top_p"),
        ({"prompt": "abc", "top_p": 1.5}, "top_p"),
        ({"prompt": "abc", "n": 0}, "n"),
        ({"prompt": "abc", "n": 17}, "n"),
        ({"prompt": "abc", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"prompt": "abc", "logprobs": 6}, "logprobs"),
        ({"prompt": "abc", "stream_options": {"include_usage": True}}, "stream_options"),
        ({"prompt": "abc", "max_tokens": "5"}, "max_tokens"),
        ({"prompt": "abc", "suffix": "x"}, "suffix"),
        ({"prompt": "abc", "best_of": 2}, "best_of"),
        ({"prompt": "abc", "max_tokens": 0}, "max_tokens"),
        ({"prompt": 5}, "prompt"),
        ({}, "prompt"),
    ],
)
def test_bad_input_is_400_naming_param(client, body, param):
    assert_invalid(complete(client, **body), param)


@pytest.mark.parametrize(
    "field,value",
    [
        ("seed", 2**64),
        ("seed", -(2**64)),
        ("top_k", 2**64),
        ("max_tokens", 2**64),
        ("n", 2**64),
        ("best_of", 2**64),
        ("logprobs", 2**64),
        ("min_tokens", 2**64),
        ("stop_token_ids", [2**64]),
        ("prompt", [2**64]),
        ("logit_bias", {"1": 1e308}),
        ("temperature", 1e308),
        ("frequency_penalty", -1e308),
    ],
)
def test_out_of_range_numbers_are_400_naming_the_field(client, field, value):
    # unbounded, these reached the engine and came back as a 500, which the SDK retries
    body = {"prompt": "abc", "max_tokens": 1, field: value}
    assert_invalid(complete(client, **body), field)


def test_one_stop_string_is_one_sequence_of_any_length(client, engine):
    r = complete(client, prompt="abc", max_tokens=2, stop="\n\nJULIET:")
    assert r.status_code == 200, r.text
    assert engine.seen[-1][1].stop == ("\n\nJULIET:",)


def test_engine_refusal_is_400_before_the_stream_starts(client, engine):
    # max_tokens null means "as many as fit" (61 here), which min_tokens exceeds: only the
    # engine's own check sees it, and it must answer before the 200 of a stream is sent
    r = complete(client, prompt="abc", max_tokens=None, min_tokens=62, stream=True)
    assert r.status_code == 400, r.text
    assert "min_tokens" in r.json()["error"]["message"]
    assert engine.seen == []


def test_unknown_characters_are_named(client):
    r = complete(client, prompt="abc€Z")
    assert_invalid(r, "prompt", code="unknown_characters")
    assert "'€'" in r.json()["error"]["message"] and "'Z'" in r.json()["error"]["message"]


def test_context_overflow_is_400_not_clamped(client, engine):
    r = complete(client, prompt="a" * 60, max_tokens=5)
    assert_invalid(r, "max_tokens", code="context_length_exceeded")
    assert "64" in r.json()["error"]["message"]
    assert engine.seen == []


def test_non_json_body_is_400(client):
    r = client.post(
        "/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_404(client):
    r = complete(client, model="gpt-4", prompt="abc")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_aliases_are_served_under_the_versioned_name():
    with fake_app(no_auth=True, model_aliases=["shakespeare", "fake"]) as client:
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert ids == ["fake", "shakespeare"]  # served name first; a repeated name once
        assert client.get("/v1/models/shakespeare").json()["id"] == "shakespeare"
        r = complete(client, model="shakespeare", prompt="abc", max_tokens=2)
        assert r.status_code == 200, r.text
        # the response names the version that answered, not the alias asked for
        assert r.json()["model"] == "fake"
        r = client.post("/tokenize", json={"model": "shakespeare", "prompt": "ab"})
        assert r.json()["count"] == 2
        # a client pinning another version is told, not switched
        r = complete(client, model="fake-v1", prompt="abc")
        assert r.status_code == 404
        assert r.json()["error"]["message"] == (
            "The model 'fake-v1' does not exist; this server serves 'fake' (also as 'shakespeare')."
        )
        assert client.get("/v1/models/fake-v1").status_code == 404


def test_aliases_from_the_environment_are_comma_separated(monkeypatch):
    from nanoserve.server.settings import Settings

    monkeypatch.setenv("NANOSERVE_MODEL_ALIASES", "a, b")
    assert Settings().model_aliases == ["a", "b"]


def test_unknown_fields_are_ignored(client):
    r = complete(client, prompt="abc", max_tokens=1, some_future_field={"x": 1})
    assert r.status_code == 200, r.text


def test_body_over_limit_is_413(client):
    r = complete(client, prompt="a" * 5000)
    assert r.status_code == 413
    assert "4096" in r.json()["error"]["message"]


def test_request_id_is_echoed_when_safe_and_replaced_when_not(client):
    assert client.get("/live", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == (
        "abc-123"
    )
    fresh = client.get("/live", headers={"x-request-id": "bad id!"}).headers["x-request-id"]
    assert fresh != "bad id!" and len(fresh) == 32


def test_request_id_prefixes_engine_request_id(client, engine):
    r = client.post(
        "/v1/completions",
        json={"model": "fake", "prompt": "ab", "max_tokens": 1},
        headers={"x-request-id": "trace-7"},
    )
    assert r.status_code == 200
    assert r.json()["id"] == "cmpl-trace-7"
    assert engine.seen[-1][2] == "trace-7-0"


def test_models_list_and_get(client):
    r = client.get("/v1/models")
    assert r.status_code == 200
    data = r.json()["data"]
    assert data[0]["id"] == "fake" and data[0]["object"] == "model"
    assert data[0]["max_model_len"] == 64
    assert client.get("/v1/models/fake").json()["id"] == "fake"
    assert client.get("/v1/models/other").status_code == 404


def test_legacy_generate_contract(client):
    r = client.post("/generate", json={"prompt": "abc", "max_tokens": 3})
    assert r.status_code == 200, r.text
    assert r.json() == {"text": "abcdef", "tokens_generated": 3}


def assert_legacy_error(r, status: int) -> dict:
    """/generate's one rule: the OpenAI error body plus the seed's `detail` (same message)."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["detail"] == body["error"]["message"] and body["detail"]
    return body["error"]


def test_legacy_generate_route_errors_follow_the_rule(client):
    assert_legacy_error(client.post("/generate", json={"max_tokens": 3}), 422)
    err = assert_legacy_error(
        client.post("/generate", json={"prompt": "a", "max_tokens": 5000}), 400
    )
    assert err["param"] == "max_tokens"  # above --crop-max-tokens
    assert_legacy_error(client.post("/generate", json={"prompt": "a" * 5000}), 413)


def test_legacy_generate_middleware_errors_follow_the_rule(tmp_path):
    body = {"prompt": "abc", "max_tokens": 2}
    with fake_app(api_keys=["k"], rpm=1) as c:
        assert_legacy_error(c.post("/generate", json=body), 401)
        key = {"Authorization": "Bearer k"}
        assert c.post("/generate", json=body, headers=key).status_code == 200
        assert_legacy_error(c.post("/generate", json=body, headers=key), 429)
    closed = f"redis://127.0.0.1:{free_port()}"  # nothing listens: the limiter fails closed
    with fake_app(api_keys=["k"], rpm=5, ratelimit_storage=closed) as c:
        r = c.post("/generate", json=body, headers={"Authorization": "Bearer k"})
        assert assert_legacy_error(r, 503)["code"] == "server_overloaded"


def test_legacy_generate_top_k_over_the_vocabulary_is_off(client, engine):
    # the seed's default top_k=200 exceeds a character vocabulary: it means "keep every token"
    assert client.post("/generate", json={"prompt": "abc", "max_tokens": 1}).status_code == 200
    assert engine.seen[-1][1].top_k == 0


def test_root_says_where_the_api_and_the_playground_are():
    with fake_app(no_auth=True) as c:
        assert c.get("/").json()["message"].endswith("try it in a browser at /playground")
    with fake_app(no_auth=True, no_playground=True) as c:
        assert "/playground" not in c.get("/").json()["message"]


def test_health_probes(client, engine):
    assert client.get("/").json()["status"] == "ok"
    assert client.get("/health").json() == {"status": "healthy", "model_loaded": True}
    assert client.get("/live").status_code == 200
    assert client.get("/ready").status_code == 200
    engine.dead = True
    assert client.get("/health").status_code == 503
    assert client.get("/ready").status_code == 503


def test_unknown_route_is_openai_404(client):
    r = client.get("/v1/nothing")
    assert r.status_code == 404
    assert "error" in r.json()


def test_metrics_exposes_request_counts(client, tmp_path):
    complete(client, prompt="ab", max_tokens=2)
    keys = tmp_path / "keys"
    keys.write_text("prom sk-prom metrics\n")
    keys.chmod(0o600)
    client.app.state.auth.settings = client.app.state.auth.settings.model_copy(
        update={"api_key_file": keys}
    )
    assert client.app.state.auth.reload()
    text = client.get("/metrics", headers={"Authorization": "Bearer sk-prom"}).text
    assert 'nanoserve_requests_total{route="/v1/completions",status="200"}' in text
    assert "nanoserve_completion_tokens_total 2.0" in text

"""nanoGPT's context cropping (/generate, crop_context) against a fake engine: which contexts
the engine is asked for. Greedy parity with nanoGPT itself is proven in tests/e2e/test_window.py."""

import json

import pytest

from tests.support.fake_engine import FakeEngine, fake_app

WINDOW = 8


@pytest.fixture
def engine():
    return FakeEngine(max_model_len=WINDOW)


@pytest.fixture
def client(engine):
    with fake_app(engine, no_auth=True) as c:
        yield c


def test_generate_past_the_window_crops_before_each_token(client, engine):
    r = client.post("/generate", json={"prompt": "abc", "max_tokens": 10, "temperature": 0})
    assert r.status_code == 200, r.text
    # the fake writes the letter after the context's last one, so cropping keeps the sequence
    assert r.json() == {"text": "abcdefghijklm", "tokens_generated": 10}
    calls = [(engine.decode(ids), s.max_tokens) for ids, s, _ in engine.seen]
    assert calls[0] == ("abc", 5)  # what fits in the window: one ordinary request
    full = "abcdefghijklm"
    assert calls[1:] == [(full[k - WINDOW : k], 1) for k in range(8, 13)]
    assert len({rid for _, _, rid in engine.seen}) == len(engine.seen)


def test_a_prompt_longer_than_the_window_is_cropped_too(client, engine):
    r = client.post("/generate", json={"prompt": "abcdefghijkl", "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "abcdefghijklmn"
    assert [engine.decode(ids) for ids, _, _ in engine.seen] == ["efghijkl", "fghijklm"]


def test_completions_keep_the_400_unless_crop_context(client):
    body = {"model": "fake", "prompt": "abc", "max_tokens": 10}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = client.post("/v1/completions", json={**body, "crop_context": True})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == "defghijklm"
    assert r.json()["usage"] == {"prompt_tokens": 3, "completion_tokens": 10, "total_tokens": 13}


def test_cropped_stream_has_one_finish_reason_and_usage(client):
    body = {"model": "fake", "prompt": "abc", "max_tokens": 10, "crop_context": True}
    body |= {"stream": True, "stream_options": {"include_usage": True}, "logprobs": 1}
    r = client.post("/v1/completions", json=body)
    events = [e.removeprefix("data: ") for e in r.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    choices = [c for ch in chunks for c in ch["choices"]]
    assert "".join(c["text"] for c in choices) == "defghijklm"
    assert [c["finish_reason"] for c in choices if c["finish_reason"]] == ["length"]
    assert sum(len(c["logprobs"]["tokens"]) for c in choices) == 10
    assert chunks[-1]["usage"]["completion_tokens"] == 10


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"stop": "x"}, "stop"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"min_tokens": 2}, "min_tokens"),
        ({"echo": True, "logprobs": 1}, "logprobs"),
        ({"max_tokens": 5000}, "max_tokens"),
    ],
)
def test_what_crop_context_cannot_do_is_a_400(client, extra, param):
    body = {"model": "fake", "prompt": "abc", "max_tokens": 10, "crop_context": True, **extra}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param

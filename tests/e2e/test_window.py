"""Past the context window with nanoGPT's cropping, on the demo model (block_size 128) behind
the real server and engine: greedy output equals nanoGPT's own generate() at top_k=1 for three
times the context."""

import time

import httpx
import openai
import pytest

from tests.support.servers import decode, encode

pytestmark = pytest.mark.engine

MODEL = "shakespeare_char"
BLOCK = 128
LONG = 3 * BLOCK  # 384 new tokens: 2 windows' worth past the first


@pytest.fixture(scope="session")
def long_greedy(reference):
    """nanoGPT's greedy continuation of "ROMEO:" (it crops to block_size before each token)."""
    model, vocab = reference
    return decode(vocab, model.generate_greedy(encode(vocab, "ROMEO:"), LONG))


def test_generate_past_the_window_equals_nanogpt(demo, long_greedy):
    start = time.monotonic()
    r = httpx.post(
        demo.url + "/generate",
        json={"prompt": "ROMEO:", "max_tokens": LONG, "temperature": 0},
        timeout=300,
    )
    elapsed = time.monotonic() - start
    assert r.status_code == 200, r.text
    assert r.json() == {"text": "ROMEO:" + long_greedy, "tokens_generated": LONG}
    print(f"\n/generate {LONG} tokens past a {BLOCK}-token window: {elapsed:.1f} s")


def test_completions_crop_context_stream_and_not(demo, long_greedy):
    client = openai.OpenAI(base_url=demo.url + "/v1", api_key="x", max_retries=0, timeout=300)
    kwargs = {"model": MODEL, "prompt": "ROMEO:", "max_tokens": LONG, "temperature": 0}
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(**kwargs)
    assert e.value.body["code"] == "context_length_exceeded"
    crop = {"crop_context": True}
    r = client.completions.create(**kwargs, extra_body=crop)
    assert r.choices[0].text == long_greedy
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == LONG
    chunks = list(client.completions.create(**kwargs, stream=True, extra_body=crop))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == long_greedy
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["length"]


def test_a_prompt_longer_than_the_window_is_cropped_as_nanogpt_does(demo, reference):
    model, vocab = reference
    prompt = ("ROMEO:\nBut soft, what light through yonder window breaks? " * 4)[: BLOCK + 40]
    expected = decode(vocab, model.generate_greedy(encode(vocab, prompt), 20))
    r = httpx.post(
        demo.url + "/generate",
        json={"prompt": prompt, "max_tokens": 20, "temperature": 0},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.json()["text"] == prompt + expected

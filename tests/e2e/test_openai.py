"""The bundled demo model behind the real server and engine, driven by the real openai SDK."""

import asyncio

import openai
import pytest
import torch

from tests.support.servers import decode, encode, metric, wait_until

pytestmark = pytest.mark.engine

MODEL = "shakespeare_char"  # the demo checkpoint's directory name


@pytest.fixture(scope="session")
def client(demo):
    return openai.OpenAI(base_url=demo.url + "/v1", api_key="test", max_retries=0)


def test_models_lists_the_demo(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].model_extra["max_model_len"] > 0


@pytest.mark.parametrize("prompt", ["ROMEO:", "\n", "What light through yonder"])
def test_greedy_text_equals_reference_model(client, reference, prompt):
    model, vocab = reference
    expected = decode(vocab, model.generate_greedy(encode(vocab, prompt), 48))
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=48, temperature=0)
    assert r.choices[0].text == expected
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(prompt)
    assert r.usage.completion_tokens == 48
    assert r.usage.total_tokens == len(prompt) + 48


def test_stream_text_equals_non_stream(client):
    for kwargs in ({"temperature": 0}, {"temperature": 1.0, "seed": 7}):
        full = client.completions.create(model=MODEL, prompt="KING:", max_tokens=40, **kwargs)
        chunks = list(
            client.completions.create(
                model=MODEL, prompt="KING:", max_tokens=40, stream=True, **kwargs
            )
        )
        assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        assert len({c.id for c in chunks}) == 1


def test_seed_makes_sampling_reproducible(client):
    def sample(seed):
        return (
            client.completions.create(
                model=MODEL, prompt="LADY:", max_tokens=40, temperature=1.0, seed=seed
            )
            .choices[0]
            .text
        )

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_n_with_several_prompts_is_prompt_major(client, reference):
    model, vocab = reference
    prompts = ["ROMEO:", "First Citizen:"]
    r = client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=12, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    greedy = [decode(vocab, model.generate_greedy(encode(vocab, p), 12)) for p in prompts]
    assert [c.text for c in r.choices] == [greedy[0], greedy[0], greedy[1], greedy[1]]
    assert r.usage.prompt_tokens == sum(map(len, prompts))
    assert r.usage.completion_tokens == 4 * 12


def test_stop_string_ends_text_before_it(client):
    full = (
        client.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=60, temperature=0)
        .choices[0]
        .text
    )
    stop = full[20:23]
    cut = full.index(stop)
    r = client.completions.create(
        model=MODEL, prompt="ROMEO:", max_tokens=60, temperature=0, stop=[stop]
    )
    assert r.choices[0].text == full[:cut]
    assert r.choices[0].finish_reason == "stop"


def test_one_long_stop_string_is_one_stop_sequence(client):
    # a string is one stop sequence of any length; only a list is capped at 4 items
    full = (
        client.completions.create(model=MODEL, prompt="JULIET:", max_tokens=100, temperature=0)
        .choices[0]
        .text
    )
    stop = full[30:42]  # 12 characters, given as a plain string
    r = client.completions.create(
        model=MODEL, prompt="JULIET:", max_tokens=100, temperature=0, stop=stop
    )
    assert r.choices[0].text == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    "kwargs,param",
    [
        ({"seed": 2**64}, "seed"),
        ({"extra_body": {"top_k": 2**64}}, "top_k"),
        ({"extra_body": {"min_tokens": 2**64}}, "min_tokens"),
        ({"logit_bias": {"5": 1e300}}, "logit_bias"),
    ],
)
def test_numbers_beyond_the_engine_are_a_400_naming_the_field(client, kwargs, param):
    # these were 500s (which the SDK retries three times) before every number was bounded
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="A", max_tokens=2, **kwargs)
    assert e.value.body["param"] == param


def test_numbers_at_the_documented_bounds_are_served(client):
    # the bounds in the schema are the engine's own: its extremes must work, not just fit
    for seed in (2**63 - 1, -(2**63)):
        r = client.completions.create(
            model=MODEL, prompt="A", max_tokens=3, seed=seed, extra_body={"top_k": 2**31 - 1}
        )
        assert r.usage.completion_tokens == 3


def test_engine_refusal_comes_before_the_stream(client):
    # max_tokens=None means "as many as fit" (128 - 1 here): only vLLM's own check sees that
    # min_tokens exceeds it, and the 400 must come before a stream's 200
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(
            model=MODEL, prompt="A", max_tokens=None, stream=True, extra_body={"min_tokens": 128}
        )
    assert "min_tokens" in e.value.message


def test_logprobs_of_greedy_tokens_are_the_top_ones(client):
    r = client.completions.create(
        model=MODEL, prompt="ROMEO:", max_tokens=8, temperature=0, logprobs=3
    )
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text
    assert len(lp.token_logprobs) == 8
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 3 <= len(top) <= 4
        assert top[token] == pytest.approx(logprob)
        assert logprob == pytest.approx(max(top.values()))
    assert lp.text_offset == list(range(8))


def test_echo_scoring_matches_reference_logprobs(client, reference):
    """lm-eval-harness `local-completions` scoring: token-id prompts, echo, logprobs, 0 tokens."""
    model, vocab = reference
    text = "To be, or not to be"
    ids = encode(vocab, text)
    r = client.completions.create(
        model=MODEL, prompt=[ids], echo=True, logprobs=1, max_tokens=0, temperature=0
    )
    choice = r.choices[0]
    assert choice.text == text
    assert choice.logprobs.tokens == list(text)
    assert choice.logprobs.token_logprobs[0] is None
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([ids]))[0], dim=-1)
    expected = [float(ref[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    got = choice.logprobs.token_logprobs[1:]
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-3
    assert r.usage.completion_tokens == 0


def test_token_id_prompt_equals_text_prompt(client, reference):
    _, vocab = reference
    as_text = client.completions.create(model=MODEL, prompt="HAMLET:", max_tokens=10, temperature=0)
    as_ids = client.completions.create(
        model=MODEL, prompt=encode(vocab, "HAMLET:"), max_tokens=10, temperature=0
    )
    assert as_ids.choices[0].text == as_text.choices[0].text


def test_stream_include_usage_adds_final_usage_chunk(client):
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=["A", "B"],
            n=2,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 20)
    assert all(c.usage is None for c in chunks[:-1])
    finished = sorted(ch.index for c in chunks for ch in c.choices if ch.finish_reason)
    assert finished == [0, 1, 2, 3]


def test_context_overflow_is_a_400_not_a_clamp(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="A" * 10, max_tokens=100_000)
    assert e.value.code == "context_length_exceeded"
    assert e.value.body["param"] == "max_tokens"


def test_unknown_characters_are_a_400_naming_them(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="Hello 🙂", max_tokens=5)
    assert "'🙂'" in e.value.message


def test_token_id_outside_vocab_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt=[1, 2, 99999], max_tokens=5)
    assert e.value.body["param"] == "prompt"


def test_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="Hi", max_tokens=5)


def test_request_id_reaches_the_sdk(client):
    r = client.completions.with_raw_response.create(
        model=MODEL, prompt="Hi", max_tokens=2, extra_headers={"x-request-id": "sdk-trace-1"}
    )
    assert r.request_id == "sdk-trace-1"
    assert r.parse().id == "cmpl-sdk-trace-1"


def test_async_client_stream_and_not(demo):
    async def both():
        async with openai.AsyncOpenAI(
            base_url=demo.url + "/v1", api_key="test", max_retries=0
        ) as aclient:
            full = await aclient.completions.create(
                model=MODEL, prompt="DUKE:", max_tokens=20, temperature=0
            )
            stream = await aclient.completions.create(
                model=MODEL, prompt="DUKE:", max_tokens=20, temperature=0, stream=True
            )
            text = "".join([c.choices[0].text async for c in stream if c.choices])
            return full, text

    full, text = asyncio.run(both())
    assert text == full.choices[0].text
    assert full.object == "text_completion"


def test_a_deadline_ends_generation_with_the_text_so_far(client, demo):
    # 1,024 tokens past the 128-token window take ~15 s on 2 cores; the client allows 1.5 s
    asked = {"X-Request-Timeout": "1.5"}
    long = {"crop_context": True}
    r = client.completions.create(
        model=MODEL, prompt="ROMEO:", max_tokens=1024, extra_body=long, extra_headers=asked
    )
    assert r.choices[0].finish_reason == "timeout"
    assert 0 < r.usage.completion_tokens < 1024
    assert len(r.choices[0].text) == r.usage.completion_tokens  # one character a token
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt="ROMEO:",
            max_tokens=1024,
            stream=True,
            extra_body=long,
            extra_headers=asked,
        )
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "timeout"
    # the engine requests were aborted, not left generating
    assert wait_until(lambda: metric(demo.url, "nanoserve_engine_requests_unfinished") == 0, 5)

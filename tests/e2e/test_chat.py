"""Chat completions and the tokenizer routes: the demo model behind the real server and engine,
driven by the real openai SDK (and httpx for the routes the SDK does not have)."""

import httpx
import openai
import pytest

from tests.support.servers import decode, encode

pytestmark = pytest.mark.engine

MODEL = "shakespeare_char"
CONVERSATION = [
    {"role": "system", "content": "You are a poet of Verona."},
    {"role": "user", "content": "Speak of the night."},
]
# what the default template makes of CONVERSATION, and where it ends a reply
RENDERED = "system: You are a poet of Verona.\nuser: Speak of the night.\nassistant:"
TURN_ENDS = ["\nsystem:", "\nuser:", "\nassistant:"]


@pytest.fixture(scope="session")
def client(demo):
    return openai.OpenAI(base_url=demo.url + "/v1", api_key="test", max_retries=0)


def _reply(text: str) -> str:
    """`text` up to the first turn ending, as the server cuts a reply."""
    cuts = [text.index(s) for s in TURN_ENDS if s in text]
    return text[: min(cuts)] if cuts else text


def test_greedy_chat_equals_the_completion_of_the_rendered_prompt(client, reference):
    model, vocab = reference
    r = client.chat.completions.create(
        model=MODEL, messages=CONVERSATION, temperature=0, max_tokens=50
    )
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    greedy = decode(vocab, model.generate_greedy(encode(vocab, RENDERED), 50))
    assert choice.message.content == _reply(greedy)
    assert choice.finish_reason == ("stop" if _reply(greedy) != greedy else "length")
    plain = client.completions.create(
        model=MODEL, prompt=RENDERED, temperature=0, max_tokens=50, stop=TURN_ENDS
    )
    assert choice.message.content == plain.choices[0].text
    assert r.usage.prompt_tokens == len(RENDERED)
    assert r.usage.completion_tokens == plain.usage.completion_tokens
    assert r.object == "chat.completion"


def test_stream_role_first_finish_reason_usage_and_done(client):
    kwargs = {"model": MODEL, "messages": CONVERSATION, "max_tokens": 30, "seed": 3, "n": 2}
    full = client.chat.completions.create(**kwargs)
    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    for index in (0, 1):
        deltas = [ch for c in chunks for ch in c.choices if ch.index == index]
        assert deltas[0].delta.role == "assistant"
        assert [d.finish_reason for d in deltas if d.finish_reason] == ["length"]
        text = "".join(d.delta.content or "" for d in deltas)
        assert text == full.choices[index].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 60
    assert all(c.usage is None for c in chunks[:-1])


def test_sampling_parameters_reach_the_engine(client):
    def reply(**kw):
        r = client.chat.completions.create(model=MODEL, messages=CONVERSATION, max_tokens=20, **kw)
        return r.choices[0].message.content

    assert reply(seed=5, temperature=1.0) == reply(seed=5, temperature=1.0)
    assert reply(seed=5, temperature=1.0) != reply(seed=6, temperature=1.0)
    # a logit bias of +100 on 'z' makes greedy write nothing else
    z = str(client_vocab_id(client, "z"))
    assert reply(temperature=0, logit_bias={z: 100}) == "z" * 20
    assert reply(temperature=0, max_completion_tokens=7, top_p=0.5, presence_penalty=0.5)


def client_vocab_id(client, char: str) -> int:
    r = httpx.post(str(client.base_url).removesuffix("/v1/") + "/tokenize", json={"prompt": char})
    return r.json()["tokens"][0]


def test_chat_logprobs_are_the_top_ones(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=CONVERSATION,
        temperature=0,
        max_tokens=5,
        logprobs=True,
        top_logprobs=3,
    )
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3
        assert t.top_logprobs[0].token == t.token  # greedy: the chosen one is the likeliest
        assert t.logprob == pytest.approx(t.top_logprobs[0].logprob)
        assert t.bytes == list(t.token.encode())


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            },
            "messages",
        ),
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"messages": [{"role": "user", "content": "naïve"}]}, "messages"),
    ],
)
def test_what_a_base_model_cannot_do_is_a_400_naming_it(client, kwargs, param):
    kwargs = {"model": MODEL, "messages": CONVERSATION, "max_tokens": 5, **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**kwargs)
    assert e.value.body["param"] == param, e.value.body


def test_request_id_is_the_chat_completion_id(client):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=CONVERSATION, max_tokens=3
    )
    assert raw.parse().id == "chatcmpl-" + raw.headers["x-request-id"]


def test_tokenize_is_one_token_per_character_and_detokenize_inverts_it(demo, reference):
    _, vocab = reference
    r = httpx.post(demo.url + "/tokenize", json={"prompt": "ROMEO:", "return_token_strs": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tokens"] == encode(vocab, "ROMEO:") and body["count"] == 6
    assert body["token_strs"] == list("ROMEO:")
    assert body["max_model_len"] == 128
    chat = httpx.post(demo.url + "/tokenize", json={"model": MODEL, "messages": CONVERSATION})
    assert chat.json()["tokens"] == encode(vocab, RENDERED)
    back = httpx.post(demo.url + "/detokenize", json={"tokens": body["tokens"]})
    assert back.json() == {"prompt": "ROMEO:"}

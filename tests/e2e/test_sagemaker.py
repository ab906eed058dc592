"""One more real server, for the settings the demo server does not have: SageMaker mode
(`--sagemaker`), API keys, and a chat template file. SageMaker's two routes answer without a
key; every other route, /tokenize and chat included, needs one; the template's turn ending ends
a reply."""

import json

import httpx
import openai
import pytest

from tests.support.servers import decode, encode

pytestmark = pytest.mark.engine

MODEL = "shakespeare_char"
KEY = "sk-sagemaker-e2e"
# Each message is one line: the line break the model writes is then the turn ending, so a reply
# is one line of verse.
TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
MESSAGES = [{"role": "user", "content": "ROMEO: But soft, what light through yonder window?"}]


@pytest.fixture(scope="module")
def sagemaker(start_server, demo_cache, tmp_path_factory):
    template = tmp_path_factory.mktemp("chat") / "dialogue.jinja"
    template.write_text(TEMPLATE)
    server = start_server(
        "--sagemaker",
        "--api-key",
        KEY,
        "--chat-template",
        str(template),
        "--cache-dir",
        str(demo_cache),
    )
    yield server
    server.stop()  # this module's alone: its memory goes back before the next engine starts


def test_ping_and_invocations_answer_without_a_key(sagemaker, reference):
    model, vocab = reference
    assert httpx.get(sagemaker.url + "/ping").json() == {"status": "ready"}
    expected = decode(vocab, model.generate_greedy(encode(vocab, "ROMEO:"), 30))
    body = {"model": MODEL, "prompt": "ROMEO:", "max_tokens": 30, "temperature": 0}
    r = httpx.post(sagemaker.url + "/invocations", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == expected
    legacy = {"prompt": "ROMEO:", "max_tokens": 30, "temperature": 0}
    r = httpx.post(sagemaker.url + "/invocations", json=legacy, timeout=120)
    assert r.json() == {"text": "ROMEO:" + expected, "tokens_generated": 30}
    r = httpx.post(sagemaker.url + "/invocations", json={**body, "stream": True}, timeout=120)
    events = [e.removeprefix("data: ") for e in r.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == expected


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"model": MODEL, "prompt": "A", "max_tokens": 2}),
        ("/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "max_tokens": 2}),
        ("/generate", {"prompt": "A", "max_tokens": 2}),
        ("/tokenize", {"prompt": "A"}),
        ("/detokenize", {"tokens": [1]}),
    ],
)
def test_every_other_route_needs_the_key(sagemaker, path, body):
    assert httpx.post(sagemaker.url + path, json=body).status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(sagemaker.url + path, json=body, headers=auth, timeout=120)
    assert r.status_code == 200, r.text


def test_the_template_files_turn_ending_ends_the_reply(sagemaker, reference):
    model, vocab = reference
    prompt = MESSAGES[0]["content"] + "\n"
    greedy = decode(vocab, model.generate_greedy(encode(vocab, prompt), 70))
    assert "\n" in greedy, f"the reference writes no line break here: {greedy!r}"
    client = openai.OpenAI(base_url=sagemaker.url + "/v1", api_key=KEY, max_retries=0)
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=70, temperature=0)
    assert r.choices[0].message.content == greedy.split("\n")[0]
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == len(prompt)

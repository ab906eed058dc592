"""Chat templates and /v1/chat/completions shaping against a fake engine (fast; no vLLM)."""

import json
import subprocess
import sys

import pytest
from nanoserve.server.serving.chat_template import DEFAULT_TEMPLATE, ChatTemplate, ChatTemplateError

from tests.support.fake_engine import ALPHABET, FakeEngine, fake_app
from tests.support.servers import REPO

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture
def engine():
    return FakeEngine(max_model_len=128)


@pytest.fixture
def client(engine):
    with fake_app(engine, api_keys=["sk-test"]) as c:
        c.headers["Authorization"] = "Bearer sk-test"
        yield c


def chat(client, messages=None, **body):
    body.setdefault("model", "fake")
    body["messages"] = messages or [{"role": "user", "content": "hi"}]
    return client.post("/v1/chat/completions", json=body)


def test_default_template_is_a_plain_transcript_then_the_assistant_prefix():
    t = ChatTemplate.load(None)
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
    ]
    assert t.render(messages) == "system: be brief\nuser: hello\nassistant:"
    assert t.stops == ("\nsystem:", "\nuser:", "\nassistant:")


def test_stops_are_derived_from_the_template():
    assert ChatTemplate(CHATML).stops == (
        "<|im_end|>\n<|im_start|>system\n",
        "<|im_end|>\n<|im_start|>user\n",
        "<|im_end|>\n<|im_start|>assistant\n",
    )


def test_template_file_may_be_a_tokenizer_config(tmp_path):
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps({"chat_template": CHATML}))
    assert ChatTemplate.load(path).render([{"role": "user", "content": "x"}]) == (
        "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
    )


def test_template_with_unknown_characters_is_refused_naming_them():
    ChatTemplate(DEFAULT_TEMPLATE).check_vocabulary(frozenset(ALPHABET))  # fits the fake
    with pytest.raises(ChatTemplateError, match=r"'<', '>', '_', '\|'"):
        ChatTemplate(CHATML).check_vocabulary(frozenset(ALPHABET))


def test_server_with_an_unknown_character_template_exits_with_one_line(tmp_path):
    path = tmp_path / "chat.jinja"
    path.write_text(CHATML)
    cmd = [sys.executable, str(REPO / "tests/support/fake_server.py"), "--no-auth"]
    cmd += ["--port", "0", "--chat-template", str(path), "--log-format", "text"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 1, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1, out.stderr
    assert "does not know: '<', '>', '_', '|'" in errors[0]
    assert "Traceback" not in out.stderr


def test_broken_template_file_is_refused_before_the_engine_starts(tmp_path):
    path = tmp_path / "chat.jinja"
    path.write_text("{% for m in messages %}")
    with pytest.raises(ChatTemplateError, match=r"chat\.jinja"):
        ChatTemplate.load(path)


def test_chat_shape_and_usage(client, engine):
    r = chat(client, max_tokens=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    prompt = "user: hi\nassistant:"
    assert engine.seen[0][0] == engine.encode(prompt)
    assert engine.seen[0][1].stop == ("\nsystem:", "\nuser:", "\nassistant:")
    expected = engine.decode([(ALPHABET.index(":") + 1 + k) % len(ALPHABET) for k in range(3)])
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": expected, "refusal": None},
            "logprobs": None,
            "finish_reason": "length",
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": len(prompt),
        "completion_tokens": 3,
        "total_tokens": len(prompt) + 3,
    }


def test_stream_puts_the_role_in_the_first_delta_and_ends_with_usage_and_done(client):
    r = chat(client, max_tokens=3, n=2, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200, r.text
    events = [e.removeprefix("data: ") for e in r.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    for index in (0, 1):
        deltas = [ch["delta"] for c in chunks for ch in c["choices"] if ch["index"] == index]
        assert deltas[0]["role"] == "assistant"
        assert all("role" not in d for d in deltas[1:])
        reasons = [
            ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["index"] == index
        ]
        assert reasons.count("length") == 1 and reasons[-1] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    assert all(c["usage"] is None for c in chunks[:-1])


def test_chat_logprobs_have_the_chat_shape(client):
    r = chat(client, max_tokens=2, logprobs=True, top_logprobs=1)
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 2
    first = content[0]
    assert set(first) == {"token", "logprob", "bytes", "top_logprobs"}
    assert first["bytes"] == list(first["token"].encode())
    assert first["top_logprobs"] == [
        {"token": first["token"], "logprob": -0.5, "bytes": list(first["token"].encode())}
    ]


def test_max_completion_tokens_wins_and_text_parts_are_joined(client, engine):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
    r = chat(client, messages, max_tokens=9, max_completion_tokens=2)
    assert r.status_code == 200, r.text
    assert engine.seen[0][0] == engine.encode("user: ab\nassistant:")
    assert engine.seen[0][1].max_tokens == 2


def test_no_max_tokens_means_as_many_as_fit(client, engine):
    assert chat(client).status_code == 200
    assert engine.seen[0][1].max_tokens == 128 - len("user: hi\nassistant:")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 9}, "top_logprobs"),
        ({"model": "other"}, "model"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"max_tokens": 500}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            "messages",
        ),
        ({"messages": [{"role": "user", "content": "HI"}]}, "messages"),  # not in the vocabulary
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages"),
    ],
)
def test_what_a_base_model_cannot_do_is_a_400_naming_the_parameter(client, body, param):
    messages = body.pop("messages", None)
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": "fake",
            "messages": messages if messages is not None else [{"role": "user", "content": "hi"}],
            **body,
        },
    )
    assert r.status_code in (400, 404), r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    assert err["message"]


def test_chat_needs_credentials(client):
    r = client.post(
        "/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer wrong"},
    )
    assert r.status_code == 401

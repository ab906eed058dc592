"""POST /tokenize and /detokenize against a fake engine (fast; no vLLM)."""

import pytest

from tests.support.fake_engine import FakeEngine, fake_app


@pytest.fixture
def client():
    with fake_app(FakeEngine(max_model_len=64), api_keys=["sk-test"]) as c:
        c.headers["Authorization"] = "Bearer sk-test"
        yield c


def test_tokenize_a_prompt_one_character_one_token(client):
    r = client.post("/tokenize", json={"prompt": "abc", "return_token_strs": True})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "count": 3,
        "max_model_len": 64,
        "tokens": [0, 1, 2],
        "token_strs": list("abc"),
    }


def test_tokenize_messages_as_the_chat_template_renders_them(client):
    messages = [{"role": "user", "content": "hi"}]
    with_prefix = client.post("/tokenize", json={"messages": messages}).json()
    without = client.post("/tokenize", json={"messages": messages, "add_generation_prompt": False})
    assert with_prefix["count"] == len("user: hi\nassistant:")
    assert without.json()["count"] == len("user: hi\n")


def test_detokenize_inverts_tokenize(client):
    ids = client.post("/tokenize", json={"prompt": "hello world"}).json()["tokens"]
    r = client.post("/detokenize", json={"tokens": ids})
    assert r.status_code == 200, r.text
    assert r.json() == {"prompt": "hello world"}


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/tokenize", {"prompt": "ABC"}, 400, "prompt"),
        ("/tokenize", {"messages": [{"role": "user", "content": "ABC"}]}, 400, "messages"),
        ("/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "a"}]}, 400, None),
        ("/tokenize", {"prompt": "a", "model": "other"}, 404, "model"),
        ("/detokenize", {"tokens": [999]}, 400, "tokens"),
        ("/detokenize", {"tokens": [-1]}, 400, "tokens"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_parameter(client, path, body, status, param):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("path", ["/tokenize", "/detokenize"])
def test_tokenizer_routes_need_credentials(client, path):
    r = client.post(path, json={"prompt": "a", "tokens": [0]}, headers={"Authorization": ""})
    assert r.status_code == 401

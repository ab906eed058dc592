"""SageMaker's /ping and /invocations against a fake engine (fast; no vLLM)."""

import pytest
from nanoserve.server.cli import auth_problem
from nanoserve.server.settings import Settings

from tests.support.fake_engine import fake_app


@pytest.fixture
def client():
    with fake_app(api_keys=["sk-test"], sagemaker=True) as c:
        yield c


def test_sagemaker_mode_listens_on_8080_unless_a_port_is_given():
    assert Settings(sagemaker=True).port == 8080
    assert Settings(sagemaker=True, port=9000).port == 9000
    assert Settings().port == 8000


def test_sagemaker_mode_is_refused_on_a_public_address_unless_confirmed():
    assert "refusing --sagemaker" in auth_problem(
        Settings(sagemaker=True, host="0.0.0.0", api_keys=["k"])
    )
    assert (
        auth_problem(
            Settings(sagemaker=True, host="0.0.0.0", api_keys=["k"], allow_public_no_auth=True)
        )
        is None
    )


def test_ping_and_invocations_are_open_in_sagemaker_mode(client):
    assert client.get("/ping").json() == {"status": "ready"}
    r = client.post("/invocations", json={"model": "fake", "prompt": "abc", "max_tokens": 3})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "text_completion" and r.json()["choices"][0]["text"] == "def"
    r = client.post("/invocations", json={"prompt": "abc", "max_tokens": 3})
    assert r.json() == {"text": "abcdef", "tokens_generated": 3}


def test_every_other_route_keeps_its_authentication_in_sagemaker_mode(client):
    for path in ("/v1/completions", "/generate", "/v1/chat/completions", "/tokenize"):
        assert client.post(path, json={}).status_code == 401, path


def test_invocations_errors_name_the_parameter(client):
    r = client.post("/invocations", json={"model": "fake", "prompt": "abc", "n": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    r = client.post("/invocations", json={"prompt": "abc", "max_tokens": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_without_sagemaker_mode_the_routes_need_credentials():
    with fake_app(api_keys=["sk-test"]) as c:
        assert c.get("/ping").status_code == 401
        assert c.post("/invocations", json={"prompt": "abc"}).status_code == 401

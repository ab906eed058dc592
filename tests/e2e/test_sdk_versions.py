"""The openai SDK versions docs/API.md claims — the oldest 1.x, the last 2.x and the installed
one — against the demo server. Each old release is installed once into tmp/venv-openai-VERSION
(a throwaway venv, reused by later runs) and runs tests/support/sdk_client.py in a subprocess."""

import json
import subprocess
import sys

import pytest

from tests.support.servers import REPO, decode, encode

pytestmark = pytest.mark.engine

# openai < 1.55.3 passes `proxies=` to httpx, which httpx 0.28 removed: old SDKs need an old httpx
# (an SDK bug, https://github.com/openai/openai-python/issues/1902; not the server's).
RELEASES = {"1.0.0": ["openai==1.0.0", "httpx<0.28"], "2.54.0": ["openai==2.54.0"]}
INSTALL_TIMEOUT = 300  # s


def sdk_python(version: str) -> str:
    """The interpreter of a venv with `openai==version` (built on first use)."""
    if version == "installed":
        return sys.executable
    venv = REPO / "tmp" / f"venv-openai-{version}"
    python = venv / "bin" / "python"
    check = [str(python), "-c", f"import openai; assert openai.__version__ == {version!r}"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    install = [str(python), "-m", "pip", "install", "-q", *RELEASES[version]]
    subprocess.run(install, check=True, timeout=INSTALL_TIMEOUT)
    subprocess.run(check, check=True)
    return str(python)


@pytest.mark.parametrize("version", ["1.0.0", "2.54.0", "installed"])
def test_sdk_release_gets_the_same_answers(demo, reference, version):
    model, vocab = reference
    python = sdk_python(version)
    script = str(REPO / "tests" / "support" / "sdk_client.py")
    run = subprocess.run(
        [python, script, demo.url], capture_output=True, text=True, timeout=300, cwd="/"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    if version != "installed":
        assert out["version"] == version
    completion = decode(vocab, model.generate_greedy(encode(vocab, "ROMEO:"), 20))
    rendered = "user: Speak of the night.\nassistant:"
    reply = decode(vocab, model.generate_greedy(encode(vocab, rendered), 20))
    reply = min((reply.split(s)[0] for s in ("\nsystem:", "\nuser:", "\nassistant:")), key=len)
    assert len(reply) <= out["chat_tokens"] <= 20  # a turn ending's tokens count, not its text
    assert out == {
        "version": out["version"],
        "models": ["shakespeare_char"],
        "completion": completion,
        "completion_tokens": 20,
        "completion_stream": completion,
        "chat": reply,
        "chat_role": "assistant",
        "chat_stream": reply,
        "chat_stream_role": "assistant",
        "chat_tokens": out["chat_tokens"],
        "chat_stream_usage": out["chat_tokens"],
        "tools_error_param": "tools",
    }

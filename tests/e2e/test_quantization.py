"""INT8 on CPU, end to end: the demo converted with `--quantize int8`, served by the real engine,
driven by the real openai SDK. One engine start for the module (a small KV cache, as every test
server). Refusals of other choices are in tests/server/engine/test_quantization.py (they
happen before any engine starts).
"""

import math

import openai
import pytest
import torch
from nanoserve.convert.cli import main as convert_main

from bench.quality import heldout_text
from tests.support.servers import DEMO, encode

pytestmark = pytest.mark.engine

MODEL = "shakespeare_char-int8"
WINDOWS = 8  # held-out windows of the demo's full context (128 characters) scored


@pytest.fixture(scope="module")
def int8_server(start_server, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / MODEL
    assert convert_main([str(DEMO / "ckpt.pt"), "--out", str(out), "--quantize", "int8"]) == 0
    server = start_server(str(out), "--no-auth", "--log-format", "text")
    yield server
    server.stop()  # this module's alone: its memory goes back before the next engine starts


@pytest.fixture(scope="module")
def client(int8_server):
    return openai.OpenAI(base_url=int8_server.url + "/v1", api_key="test", max_retries=0)


def test_vllm_runs_the_int8_w8a8_kernel(int8_server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    # vLLM logs the GEMM it picked for the int8 layers: oneDNN/SGL int8, not a float fallback
    assert "Selected CPUInt8ScaledMMLinearKernel for CompressedTensorsW8A8Int8" in int8_server.log()


def test_int8_answers_completions_and_streams(client, reference):
    _, vocab = reference
    r = client.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=64, temperature=0)
    text = r.choices[0].text
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 64
    assert set(text) <= set(vocab.itos) and len(text) >= 64  # one character a token
    chunks = client.completions.create(
        model=MODEL, prompt="ROMEO:", max_tokens=64, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text


def test_int8_held_out_loss_is_within_a_few_hundredths_of_float32(client, reference):
    # The path lm-eval-harness takes: echo + logprobs, max_tokens 0. The float32 figure is the
    # checkpoint's own, computed here with the reference model on the same windows. Untrained
    # weights would score ~ln(65) = 4.2 nats a character, the trained demo ~1.5.
    model, vocab = reference
    text = heldout_text(WINDOWS * 128)
    served, local = [], []
    for k in range(WINDOWS):
        ids = encode(vocab, text[k * 128 : (k + 1) * 128])
        r = client.completions.create(
            model=MODEL, prompt=ids, echo=True, logprobs=1, max_tokens=0, temperature=0
        )
        lps = r.choices[0].logprobs.token_logprobs
        assert lps[0] is None and len(lps) == 128
        served += [-x for x in lps[1:]]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])), dim=-1)[0]
        local += [-logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
    int8, fp32 = sum(served) / len(served), sum(local) / len(local)
    assert 1.0 < fp32 < 2.0, fp32
    assert math.isfinite(int8) and abs(int8 - fp32) < 0.03, (int8, fp32)

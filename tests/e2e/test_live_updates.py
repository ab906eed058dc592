"""`serve out/ --watch` against the real engine and the real `openai` client: a training run
rewrites its checkpoint in place, slowly, while clients run; the server swaps the new weights in
without failing a request and then answers with exactly the new checkpoint's greedy text. A
truncated checkpoint never reaches users; another architecture gets an engine of its own.

One server (module-scoped): the tests run in file order, each continuing from the last one's
version.
"""

import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
import torch

from tests.support.checkpoints import (
    SHAKESPEARE_CHARS,
    encode_chars,
    greedy,
    nanogpt_checkpoint,
    tiny_model,
    write_meta,
)
from tests.support.servers import metric, wait_until

pytestmark = pytest.mark.engine

# longer than a KV-cache block (16 tokens): a stale prefix cache would replay the old weights
PROMPT = "ROMEO:\nWhat light breaks?"  # 25 + TOKENS within the 64-token context
TOKENS = 24
MODEL = "out"  # served under the checkpoint's directory name
SWAP_TIMEOUT = 180  # s: conversion (a fresh interpreter importing torch) on 2 busy cores


def _model(seed: int, n_layer: int = 2):
    return tiny_model(65, seed=seed, scale=8, block_size=64, n_layer=n_layer)


def _expected(model) -> str:
    chars = sorted(SHAKESPEARE_CHARS)
    return "".join(chars[i] for i in greedy(model, encode_chars(PROMPT), TOKENS, 65))


def _bytes(model, iter_num: int) -> bytes:
    ckpt = nanogpt_checkpoint(model)
    ckpt["iter_num"] = iter_num
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue()


def write_slowly(path: Path, data: bytes, chunks: int = 8, pause: float = 0.15) -> None:
    """Overwrite `path` in place, a chunk at a time, as torch.save does over a slow disk."""
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.truncate(0)
        step = -(-len(data) // chunks)
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(pause)


@dataclass
class Clients:
    """Threads sending greedy completions until stopped; every answer and failure is kept."""

    url: str
    answers: list[tuple[str, str]] = field(default_factory=list)  # (fingerprint, text)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, n: int = 4) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        return threads

    def _loop(self) -> None:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key="none", max_retries=0)
        while not self.stop.is_set():
            try:
                r = client.completions.create(
                    model=MODEL, prompt=PROMPT, max_tokens=TOKENS, temperature=0, timeout=60
                )
                self.answers.append((r.system_fingerprint, r.choices[0].text))
            except Exception as e:  # every kind counts: the swap must lose nothing
                self.failures.append(repr(e))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "out"
    out.mkdir()
    write_meta(out / "meta.pkl")
    a = _model(1)
    (out / "ckpt.pt").write_bytes(_bytes(a, 1000))
    return out, a


@pytest.fixture(scope="module")
def live(start_server, run, tmp_path_factory):
    out, _ = run
    cache = tmp_path_factory.mktemp("live-cache")
    args = ("out", "--watch", "--watch-settle", "0.5", "--keep-versions", "2")
    server = start_server(
        *args, "--no-auth", "--cache-dir", str(cache), "--log-format", "json", cwd=out.parent
    )
    yield server
    server.stop()  # this module's alone: its memory goes back before the next engine starts


def _card(server) -> dict:
    return httpx.get(f"{server.url}/v1/models/{MODEL}", timeout=10).json()


def _complete(server) -> httpx.Response:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0}
    return httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)


def _swap_to(server, version_prefix: str) -> bool:
    return wait_until(
        lambda: (_card(server)["version"] or "").startswith(version_prefix), SWAP_TIMEOUT, 0.2
    )


def test_the_first_version_is_named_by_iteration_and_hash(live, run):
    _, a = run
    card = _card(live)
    assert card["version"].startswith("iter1000-") and len(card["version"]) == len("iter1000-") + 8
    assert card["status"] == "ready" and card["last_error"] is None
    assert [v["id"] for v in card["versions"]] == [card["version"]]
    assert card["versions"][0]["iter_num"] == 1000
    r = _complete(live)
    assert r.json()["choices"][0]["text"] == _expected(a)
    assert r.json()["system_fingerprint"] == card["version"] == r.headers["x-model-version"]


def test_a_checkpoint_rewritten_under_load_is_swapped_in_with_no_failed_request(live, run):
    out, a = run
    b = _model(2)
    old = _card(live)["version"]
    clients = Clients(live.url)
    threads = clients.run(4)
    try:
        time.sleep(1.0)  # steady state first
        write_slowly(out / "ckpt.pt", _bytes(b, 2000))
        assert _swap_to(live, "iter2000-"), _card(live)
        time.sleep(1.0)  # and some answers from the new version
    finally:
        clients.stop.set()
        for t in threads:
            t.join(70)
    assert clients.failures == []
    new = _card(live)["version"]
    by_version = {old: _expected(a), new: _expected(b)}
    assert {fp for fp, _ in clients.answers} == {old, new}
    # every answer ran wholly on the version it names: its text is that version's greedy text
    assert all(text == by_version[fp] for fp, text in clients.answers)
    # after the swap, exactly the new checkpoint's greedy text (the prefix cache was reset)
    assert _complete(live).json()["choices"][0]["text"] == _expected(b)
    assert metric(live.url, f'nanoserve_model_info{{model="out",version="{new}"}}') == 1
    assert metric(live.url, 'nanoserve_model_reloads_total{model="out",outcome="in_place"}') == 1
    assert f'"model_version": "{new}"' in live.log()


def test_a_truncated_checkpoint_never_reaches_users(live, run):
    out, _ = run
    serving = _card(live)["version"]
    text = _complete(live).json()["choices"][0]["text"]
    data = _bytes(_model(3), 3000)
    write_slowly(out / "ckpt.pt", data[: len(data) // 2], chunks=2)
    assert wait_until(lambda: _card(live)["status"].startswith("failed: "), SWAP_TIMEOUT, 0.2)
    card = _card(live)
    assert card["version"] == serving and card["last_error"]
    assert _complete(live).json()["choices"][0]["text"] == text
    assert metric(live.url, 'nanoserve_model_reloads_total{model="out",outcome="failed"}') == 1
    assert "reload (the checkpoint changed) failed, still serving" in live.log()


def test_another_architecture_starts_its_own_engine_and_old_versions_are_pruned(live, run):
    out, _ = run
    c = _model(4, n_layer=3)
    write_slowly(out / "ckpt.pt", _bytes(c, 4000))
    assert _swap_to(live, "iter4000-"), _card(live)
    card = _card(live)
    assert card["status"] == "ready" and card["last_error"] is None
    assert [v["iter_num"] for v in card["versions"]] == [2000, 4000]  # --keep-versions 2
    assert _complete(live).json()["choices"][0]["text"] == _expected(c)
    outcome = 'nanoserve_model_reloads_total{model="out",outcome="new_engine"}'
    assert metric(live.url, outcome) == 1
    assert wait_until(lambda: "the replaced engine stopped" in live.log(), 60)

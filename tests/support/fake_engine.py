"""A fake engine at the `engine.Engine` boundary, for unit tests of routing and shaping.

It "generates" by cycling through its alphabet from the last prompt token, one char per token,
so outputs are predictable. Behaviour against the real engine is proven in tests/e2e/.
"""

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient
from nanoserve.server.app import create_app
from nanoserve.server.engine.interface import (
    ChoiceUpdate,
    EngineDead,
    EngineRejected,
    ModelInfo,
    Sampling,
    TokenLogprob,
    Update,
)
from nanoserve.server.models.live import Source
from nanoserve.server.settings import Settings
from prometheus_client import CollectorRegistry

ALPHABET = "abcdefghijklmnopqrstuvwxyz \n:"  # ":" for the default chat template


class FakeEngine:
    def __init__(self, max_model_len: int = 64, delay: float = 0.0, stop_after: int | None = None):
        self.info = ModelInfo(
            name="fake",
            max_model_len=max_model_len,
            vocab_size=len(ALPHABET),
            char_vocab=frozenset(ALPHABET),
            created=int(time.time()),
            dtype="float32",
            device="fake",
            engine_version="fake 0",
        )
        self.delay = delay
        self.stop_after = stop_after  # end every generation early, as a stop string would
        self.dead = False
        self.active = 0  # generations in progress (to see aborts)
        self.seen: list[tuple[list[int], Sampling, str]] = []
        self.shift = 0  # its "weights": each swap_weights moves the alphabet on by one
        self.swapped: list[tuple[str, int]] = []  # (model_dir, generations active meanwhile)
        self.stopped = False

    def encode(self, text: str) -> list[int]:
        return [ALPHABET.index(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(ALPHABET[i] for i in ids)

    def _position(self, t: int) -> TokenLogprob:
        return TokenLogprob(ALPHABET[t], -0.5, {ALPHABET[t]: -0.5})

    async def generate(self, prompt_ids: list[int], s: Sampling, request_id: str):
        if self.dead:
            raise EngineDead("dead")
        self.seen.append((prompt_ids, s, request_id))
        self.active += 1
        try:
            steps = min(s.max_tokens, self.stop_after or s.max_tokens)
            reason = "stop" if steps < s.max_tokens else "length"
            # as vLLM's DELTA output: the prompt's logprobs ride on the first update only
            prompt_lps = None
            if s.prompt_logprobs is not None:
                prompt_lps = [None] + [self._position(t) for t in prompt_ids[1:]]
            for step in range(steps):
                await asyncio.sleep(self.delay)
                if self.dead:
                    raise EngineDead("dead")
                last = step == steps - 1
                choices = []
                for j in range(s.n):
                    t = (prompt_ids[-1] + 1 + step + j + self.shift) % len(ALPHABET)
                    lps = [self._position(t)] if s.logprobs is not None else None
                    choices.append(ChoiceUpdate(j, ALPHABET[t], [t], lps, reason if last else None))
                yield Update(prompt_ids, choices, prompt_lps if step == 0 else None, last)
        finally:
            self.active -= 1

    async def check_health(self) -> None:
        if self.dead:
            raise EngineDead("dead")

    def check(self, s: Sampling) -> None:
        # the rules vLLM's SamplingParams enforces that a request can still reach it with
        if s.min_tokens > s.max_tokens:
            raise EngineRejected(
                f"min_tokens must be less than or equal to max_tokens={s.max_tokens}, "
                f"got {s.min_tokens}."
            )
        if s.temperature == 0 and s.n > 1:
            raise EngineRejected(f"n must be 1 when using greedy sampling, got {s.n}.")
        if any(not stop for stop in s.stop):
            raise EngineRejected("stop cannot contain an empty string.")

    def num_unfinished(self) -> int:
        return self.active

    async def swap_weights(self, model_dir) -> None:
        self.swapped.append((str(model_dir), self.active))
        self.shift += 1

    def shutdown(self) -> None:
        self.stopped = True


@contextmanager
def fake_app(
    engine: FakeEngine | None = None,
    *,
    raise_server_exceptions: bool = True,
    source: Source | None = None,
    **settings,
) -> Iterator[TestClient]:
    """The real app (settings, guard, limiter, service, routes) over a fake engine, with its
    lifespan running and the engine loaded: `with fake_app(api_keys=["k"]) as client: ...`
    (`raise_server_exceptions=False`: a bug is a 500 response, as a real client sees it;
    `source`: where the model comes from and reloads from, instead of `engine`)."""
    engine = engine or FakeEngine()

    async def load():
        return engine

    app = create_app(Settings(**settings), source or load, registry=CollectorRegistry())
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        deadline = time.monotonic() + 10  # the engine loads in a background task
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "fake engine did not become ready"
            time.sleep(0.01)
        yield client

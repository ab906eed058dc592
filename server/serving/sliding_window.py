"""Generation past the context window, with nanoGPT's semantics: before each new token, the
context is cropped to the last `window` (block_size) tokens (`idx[:, -block_size:]` in nanoGPT's
`GPT.generate`), so a 128-token model asked for 500 tokens writes 500.

Tokens that fit run as one engine request, as any completion. Each further token is one engine
request over the last `window` tokens with max_tokens=1; the engine batches these steps with
everyone else's requests. nanoGPT's positions are absolute, so nothing is reused between steps:
each costs one full-window prefill. The engine is started with one position more than the window
(`vllm_engine.py`), because vLLM refuses a prompt as long as its max_model_len, and the step over
a full window is exactly that.
"""

from collections.abc import AsyncIterator
from dataclasses import replace

from nanoserve.server.api.protocol import INT64_MAX, INT64_MIN
from nanoserve.server.engine.interface import ChoiceUpdate, Engine, Sampling, Update


def _step_seed(seed: int | None, step: int) -> int | None:
    """A different, reproducible seed per step (one seed for all would repeat its first draw)."""
    if seed is None:
        return None
    return (seed + step - INT64_MIN) % (INT64_MAX - INT64_MIN + 1) + INT64_MIN


async def _deltas(
    engine: Engine, prompt: list[int], s: Sampling, window: int, rid: str
) -> AsyncIterator[ChoiceUpdate]:
    """The choice's new tokens as they come, `finish_reason` set only on the last."""
    generated: list[int] = []
    while len(generated) < s.max_tokens:
        step = len(generated)
        if step == 0 and len(prompt) < window:  # what fits: one ordinary request
            context, max_tokens, request_id = prompt, min(s.max_tokens, window - len(prompt)), rid
        else:
            context, max_tokens, request_id = (prompt + generated)[-window:], 1, f"{rid}-w{step}"
        sampling = replace(s, max_tokens=max_tokens, seed=_step_seed(s.seed, step))
        async for update in engine.generate(context, sampling, request_id):
            for c in update.choices:
                generated.extend(c.token_ids)
                if c.finish_reason == "stop":  # a stop token id; nanoGPT itself never stops
                    yield c
                    return
                last = len(generated) >= s.max_tokens and c.finish_reason is not None
                yield replace(c, finish_reason="length" if last else None)


async def cropped(
    engine: Engine, prompt: list[int], s: Sampling, window: int, rid: str
) -> AsyncIterator[Update]:
    """Updates for one prompt (n=1) generated with nanoGPT's cropping, shaped as
    `engine.generate`'s: one delta per update, `finished` on the last."""
    async for c in _deltas(engine, prompt, s, window, rid):
        yield Update(prompt, [c], None, c.finish_reason is not None)

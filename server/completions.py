"""Run prepared completion work on the engine and shape the results the OpenAI way.

Choices are ordered prompt-major (`index = prompt_i * n + j`), usage is summed over prompts and
choices, and a stream ends with exactly one finish_reason per index, the optional usage chunk,
then `data: [DONE]` (REFERENCE §1).
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from .errors import APIError, internal, invalid, unavailable
from .generation import (
    ChoiceUpdate,
    Engine,
    EngineDead,
    EngineRejected,
    Sampling,
    TokenLogprob,
    Update,
)
from .metrics import Metrics
from .prepare import Prepared, PreparedPrompt

log = logging.getLogger("nanoserve.completions")

PING_SECONDS = 15.0  # SSE comment sent while no token arrives, so proxies keep the stream open


@dataclass
class Job:
    """One completion request in flight."""

    id: str  # "cmpl-<request id>"
    model: str
    work: Prepared
    created: int = field(default_factory=lambda: int(time.time()))
    completion_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p.token_ids) for p in self.work.prompts)

    @property
    def max_tokens_total(self) -> int:
        """Worst case: every prompt, plus max_tokens for each of its n choices."""
        w = self.work
        generated = 0 if w.discard_output else w.sampling.max_tokens * w.sampling.n
        return sum(len(p.token_ids) + generated for p in w.prompts)

    def usage(self) -> dict:
        p, c = self.prompt_tokens, self.completion_tokens
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _logprobs_json(positions: list[TokenLogprob | None], first_token: str) -> dict:
    """OpenAI's legacy logprobs; offsets index into the choice's text. A None position (the
    first prompt token: nothing to condition on) has a null logprob, named by `first_token`."""
    tokens, lps, tops, offsets = [], [], [], []
    offset = 0
    for pos in positions:
        token = pos.token if pos else first_token
        tokens.append(token)
        lps.append(pos.logprob if pos else None)
        tops.append(pos.top if pos else None)
        offsets.append(offset)
        offset += len(token)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def _prompt_text(engine: Engine, prompt: PreparedPrompt) -> str:
    if prompt.text is None:
        prompt.text = engine.decode(prompt.token_ids)
    return prompt.text


class Completions:
    """Completion work against one engine: `run` for one JSON answer, `stream` for SSE."""

    def __init__(self, engine: Engine, metrics: Metrics):
        self.engine = engine
        self.metrics = metrics

    def _count(self, job: Job) -> None:
        self.metrics.prompt_tokens.inc(job.prompt_tokens)
        self.metrics.completion_tokens.inc(job.completion_tokens)

    def _choice_json(self, job: Job, i: int, update: Update, c: ChoiceUpdate, first: bool) -> dict:
        """One choice (or one streamed delta of it). `first`: echo the prompt in front."""
        w = job.work
        text = "" if w.discard_output else c.text
        positions: list[TokenLogprob | None] = [] if w.discard_output else list(c.logprobs or [])
        first_token = ""
        if w.echo and first:
            text = _prompt_text(self.engine, w.prompts[i]) + text
            if w.logprobs is not None:
                positions = list(update.prompt_logprobs or []) + positions
                first_token = self.engine.decode(w.prompts[i].token_ids[:1])
        logprobs = _logprobs_json(positions, first_token) if w.logprobs is not None else None
        return {
            "index": i * w.sampling.n + c.index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": c.finish_reason,
        }

    def check(self, job: Job) -> None:
        """Let the engine refuse the parameters now (400), before a stream sends its 200."""
        try:
            self.engine.check(engine_sampling(job.work.sampling))
        except EngineRejected as e:
            raise invalid(str(e)) from e

    async def _final(self, job: Job, i: int, request_id: str) -> Update:
        prompt = job.work.prompts[i]
        last = None
        async for update in generate(self.engine, prompt.token_ids, job.work.sampling, request_id):
            last = update
        assert last is not None and last.finished, "engine ended a request without a final output"
        return last

    async def run(self, job: Job, request_id: str) -> dict:
        """The whole completion as one OpenAI response body."""
        try:
            finals = await asyncio.gather(
                *(self._final(job, i, f"{request_id}-{i}") for i in range(len(job.work.prompts)))
            )
        except EngineDead as e:
            raise unavailable("The inference engine stopped; retry on another replica.") from e
        except EngineRejected as e:
            raise invalid(str(e)) from e
        choices = []
        for i, update in enumerate(finals):
            for c in sorted(update.choices, key=lambda c: c.index):
                if not job.work.discard_output:
                    job.completion_tokens += len(c.token_ids)
                choices.append(self._choice_json(job, i, update, c, first=True))
        self._count(job)
        return {
            "id": job.id,
            "object": "text_completion",
            "created": job.created,
            "model": job.model,
            "choices": choices,
            "usage": job.usage(),
        }

    def _chunk(self, job: Job, choices: list[dict], usage: dict | None = None) -> str:
        body = {
            "id": job.id,
            "object": "text_completion",
            "created": job.created,
            "model": job.model,
            "choices": choices,
        }
        if job.work.include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    async def stream(self, job: Job, request_id: str) -> AsyncIterator[str]:
        """SSE events: deltas, then the usage chunk if asked for, then [DONE] — even on failure."""
        seen: set[int] = set()  # choice indices that already had their first (echo) chunk
        try:
            async for i, update in _merged(self.engine, job, request_id):
                if update is None:
                    yield ": ping\n\n"
                    continue
                choices = []
                for c in update.choices:
                    idx = i * job.work.sampling.n + c.index
                    job.completion_tokens += 0 if job.work.discard_output else len(c.token_ids)
                    choices.append(self._choice_json(job, i, update, c, first=idx not in seen))
                    seen.add(idx)
                if choices:
                    yield self._chunk(job, choices)
            self._count(job)
            if job.work.include_usage:
                yield self._chunk(job, [], job.usage())
        except EngineRejected as e:
            yield invalid(str(e)).sse_event()
        except EngineDead:
            yield unavailable("The inference engine stopped; retry on another replica.").sse_event()
        except APIError as e:
            yield e.sse_event()
        except Exception:
            log.exception("stream %s failed", job.id)
            yield internal().sse_event()
        yield "data: [DONE]\n\n"


async def generate(
    engine: Engine, prompt_token_ids: list[int], sampling: Sampling, request_id: str
) -> AsyncIterator[Update]:
    """engine.generate, plus OpenAI's n > 1 at temperature 0: vLLM refuses it, but greedy
    choices are all the same, so the engine computes one and it is handed out n times."""
    asked = engine_sampling(sampling)
    copies = sampling.n if asked is not sampling else 1
    async for update in engine.generate(prompt_token_ids, asked, request_id):
        if copies > 1:
            update.choices = [replace(c, index=j) for c in update.choices for j in range(copies)]
        yield update


def engine_sampling(sampling: Sampling) -> Sampling:
    """What the engine is asked for: n=1 when greedy (see `generate`)."""
    return replace(sampling, n=1) if sampling.temperature == 0 and sampling.n > 1 else sampling


async def _merged(
    engine: Engine, job: Job, request_id: str
) -> AsyncIterator[tuple[int, Update | None]]:
    """Interleave the update streams of every prompt; (i, None) is a keep-alive tick."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i: int, prompt: PreparedPrompt) -> None:
        try:
            rid = f"{request_id}-{i}"
            async for u in generate(engine, prompt.token_ids, job.work.sampling, rid):
                await queue.put((i, u))
            await queue.put((i, done))
        except Exception as e:  # handed to the consumer, which re-raises it
            await queue.put((i, e))

    tasks = [asyncio.create_task(pump(i, p)) for i, p in enumerate(job.work.prompts)]
    try:
        remaining = len(tasks)
        while remaining:
            try:
                i, item = await asyncio.wait_for(queue.get(), PING_SECONDS)
            except TimeoutError:
                yield 0, None
                continue
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        # Client gone or a failure: cancelling the pumps closes the engine generators, which
        # aborts the requests inside vLLM so they stop using the batch.
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

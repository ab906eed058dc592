"""The completion service: it owns a request from admission to settlement.

`admit` validates a request against the model and this server's limits, lets the engine refuse
its sampling parameters (so a stream gets its 400 before the 200 is sent) and reserves the
caller's worst-case tokens. `run` (one JSON body) or `stream` (server-sent events) executes the
job, and `settle` — called by both when the job ends, however it ends — charges the caller what
was really used, gives back the rest of the reservation, and writes the request's access line
and metrics (time to first token, finish reasons, a client that left), exactly once.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from .access import Exchange
from .chat import CHAT, chat_work
from .chat_protocol import ChatCompletionRequest
from .chat_template import ChatTemplate
from .completions import COMPLETION, Job, Shape, chunk_event, response_json
from .engine import ChoiceUpdate, Engine, EngineDead, EngineRejected, Sampling, Update
from .errors import APIError, internal, invalid, unavailable
from .metrics import Metrics
from .prepare import Prepared, completion_work, legacy_work
from .protocol import CompletionRequest, LegacyRequest
from .security.accounting import Accounting
from .security.ratelimit import RateLimiter, Ticket
from .settings import Settings
from .window import cropped

log = logging.getLogger("nanoserve.service")

PING_SECONDS = 15.0  # SSE comment sent while no token arrives, so proxies keep the stream open
Request = CompletionRequest | LegacyRequest | ChatCompletionRequest
ENGINE_GONE = "The inference engine stopped; retry on another replica."


@dataclass(frozen=True)
class Call:
    """One HTTP request's identity, as the security layer admitted it."""

    exchange: Exchange  # request id, arrival time, access line
    ticket: Ticket | None  # None where no caller is metered


class CompletionService:
    """Completion requests against one engine, with the caller's limits and usage."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        metrics: Metrics,
        limiter: RateLimiter,
        accounting: Accounting,
        chat_template: ChatTemplate,
    ):
        self.engine = engine
        self.chat_template = chat_template
        self.settings = settings
        self.metrics = metrics
        self.limiter = limiter
        self.accounting = accounting

    def _work(self, request: Request) -> tuple[Prepared, str, Shape]:
        """(engine work, id prefix, response shape) for each wire format."""
        info, encode, s = self.engine.info, self.engine.encode, self.settings
        if isinstance(request, LegacyRequest):
            return legacy_work(request, info, s, encode), "gen", COMPLETION
        if isinstance(request, ChatCompletionRequest):
            return chat_work(request, self.chat_template, info, s, encode), "chatcmpl", CHAT
        return completion_work(request, info, s, encode), "cmpl", COMPLETION

    async def admit(self, request: Request, call: Call) -> Job:
        """Validate `request`, reserve its tokens from the caller's budget, return the job.
        Raises APIError (400/404/429/503) naming what to fix; nothing is reserved then, and the
        refusal is the request's access line."""
        try:
            return await self._admit(request, call)
        except APIError as e:
            if call.ticket is not None:
                self.accounting.rejected(call.ticket.caller.id, e.reason)
            call.exchange.close(e.status, e.reason)
            raise

    async def _admit(self, request: Request, call: Call) -> Job:
        work, prefix, shape = self._work(request)
        try:
            self.engine.check(engine_sampling(work.sampling))
        except EngineRejected as e:
            raise invalid(str(e)) from e
        job_id = f"{prefix}-{call.exchange.request_id}"
        keep = self.settings.log_text_chars
        job = Job(job_id, call.exchange, self.engine.info.name, work, None, shape, keep)
        if call.ticket is not None:
            await self.limiter.reserve_tokens(call.ticket, job.max_tokens_total)
            job.ticket = call.ticket
        return job

    async def settle(self, job: Job) -> None:
        """Charge what `job` used, give back the unused reservation, write its access line.
        Idempotent: the end of a run, of a stream and the response's background task may all
        call it (a stream abandoned by its client is settled by the background task)."""
        if job.settled:
            return
        job.settled = True
        self.metrics.prompt_tokens.inc(job.prompt_tokens)
        self.metrics.completion_tokens.inc(job.completion_tokens)
        if job.status is None:
            job.reason = "client_disconnect"
        job.exchange.close(job.status or 499, job.reason, job.outcome())
        if job.ticket is None:
            return
        self.accounting.tokens(job.ticket.caller.id, job.prompt_tokens, job.completion_tokens)
        used = job.prompt_tokens + job.completion_tokens
        # shielded: a client that leaves mid-refund must not leave its tokens reserved
        await asyncio.shield(self.limiter.refund_tokens(job.ticket, used))

    async def _final(self, job: Job, i: int) -> Update:
        """Prompt `i`'s whole result, put together from the engine's deltas. Each token is
        counted as it arrives, so a request cancelled midway (its client left) is charged what
        the engine generated, not just its prompt."""
        choices: dict[int, ChoiceUpdate] = {}
        first = last = None
        async for update in self._updates(job, i):
            first, last = first or update, update
            for c in update.choices:
                job.count(i, c)
                _extend(choices, c)
        assert last is not None and last.finished, "engine ended a request without a final output"
        ordered = [choices[k] for k in sorted(choices)]
        return Update(first.prompt_token_ids, ordered, first.prompt_logprobs, True)

    async def run(self, job: Job) -> dict:
        """The whole completion as one OpenAI response body."""
        try:
            finals = await asyncio.gather(
                *(self._final(job, i) for i in range(len(job.work.prompts)))
            )
            job.status = 200
        except EngineDead as e:
            raise _failed(job, unavailable(ENGINE_GONE, reason="engine_error")) from e
        except EngineRejected as e:
            raise _failed(job, invalid(str(e))) from e
        except Exception:  # a bug: errors.py logs it and answers 500
            _failed(job, internal())
            raise
        finally:  # a client that left cancelled us: status None, settled as 499
            await self.settle(job)
        choices = [
            job.shape.choice(job, i, update, c, self.engine.decode, True)
            for i, update in enumerate(finals)
            for c in sorted(update.choices, key=lambda c: c.index)
        ]
        return response_json(job, choices)

    async def stream(self, job: Job) -> AsyncIterator[str]:
        """SSE events: deltas, then the usage chunk if asked for, then [DONE] — even on failure
        (a silent close would look to the SDK like a short but valid completion)."""
        seen: set[int] = set()  # choice indices that already had their first (echo) chunk
        try:
            async for i, update in self._merged(job):
                if update is None:
                    yield ": ping\n\n"
                    continue
                choices = []
                for c in update.choices:
                    job.count(i, c)
                    idx = i * job.work.sampling.n + c.index
                    choices.append(
                        job.shape.choice(job, i, update, c, self.engine.decode, idx not in seen)
                    )
                    seen.add(idx)
                if choices:
                    yield chunk_event(job, choices)
                    job.delivered(max(len(c.token_ids) for c in update.choices))
            if job.work.include_usage:
                yield chunk_event(job, [], job.usage())
            job.status = 200
        # the 200 is sent: a failure is the stream's last event, and the access line's reason
        except EngineRejected as e:
            yield _failed(job, invalid(str(e)), 200).sse_event()
        except EngineDead:
            yield _failed(job, unavailable(ENGINE_GONE, reason="engine_error"), 200).sse_event()
        except APIError as e:
            yield _failed(job, e, 200).sse_event()
        except Exception:
            log.exception("stream %s failed", job.id)
            yield _failed(job, internal(), 200).sse_event()
        finally:  # a client that left closed us: status None, settled as 499
            await self.settle(job)
        yield "data: [DONE]\n\n"

    async def _updates(self, job: Job, i: int) -> AsyncIterator[Update]:
        """The engine's updates for prompt `i`, plus OpenAI's n > 1 at temperature 0: vLLM
        refuses it, but greedy choices are all the same, so one is computed and handed out n
        times."""
        sampling = job.work.sampling
        asked = engine_sampling(sampling)
        copies = sampling.n if asked is not sampling else 1
        rid = f"{job.request_id}-{i}"
        ids = job.work.prompts[i].token_ids
        if job.work.crop_context:
            updates = cropped(self.engine, ids, asked, self.engine.info.max_model_len, rid)
        else:
            updates = self.engine.generate(ids, asked, rid)
        async for update in updates:
            if copies > 1:
                update.choices = [
                    replace(c, index=j) for c in update.choices for j in range(copies)
                ]
            yield update

    async def _merged(self, job: Job) -> AsyncIterator[tuple[int, Update | None]]:
        """Interleave the update streams of every prompt; (i, None) is a keep-alive tick."""
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        async def pump(i: int) -> None:
            try:
                async for u in self._updates(job, i):
                    await queue.put((i, u))
                await queue.put((i, done))
            except Exception as e:  # handed to the consumer, which re-raises it
                await queue.put((i, e))

        tasks = [asyncio.create_task(pump(i)) for i in range(len(job.work.prompts))]
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


def _failed(job: Job, e: APIError, status: int | None = None) -> APIError:
    """Note on `job` that it ended with `e` (answered with `status`, else the error's own)."""
    job.status, job.reason = status or e.status, e.reason
    return e


def _extend(choices: dict[int, ChoiceUpdate], delta: ChoiceUpdate) -> None:
    """Append one delta to its choice (with n > 1, a delta holds only the choices that moved)."""
    c = choices.get(delta.index)
    if c is None:
        logprobs = list(delta.logprobs) if delta.logprobs is not None else None
        choices[delta.index] = replace(delta, token_ids=list(delta.token_ids), logprobs=logprobs)
        return
    c.text += delta.text
    c.token_ids += delta.token_ids
    if delta.logprobs is not None:
        c.logprobs = (c.logprobs or []) + delta.logprobs
    c.finish_reason = delta.finish_reason or c.finish_reason


def engine_sampling(sampling: Sampling) -> Sampling:
    """What the engine is asked for: n=1 when greedy (see `CompletionService._updates`)."""
    return replace(sampling, n=1) if sampling.temperature == 0 and sampling.n > 1 else sampling

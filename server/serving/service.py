"""The completion service: it owns a request from admission to settlement.

`admit` validates a request against the model and this server's limits, lets the engine refuse
its sampling parameters (so a stream gets its 400 before the 200 is sent), takes a place in the
bounded backlog (a full one is a 503 before the engine sees anything) and reserves the caller's
worst-case tokens. `run` (one JSON body) or `stream` (server-sent events) executes the job
within its deadline, and `settle` — called by both when the job ends, however it ends — charges
the caller what was really used, gives back the rest of the reservation, and writes the
request's access line and metrics (time to first token, finish reasons, a client that left),
exactly once.

The backlog is what vLLM would queue: requests admitted here that have no first output yet.
Counting it here, not reading vLLM's scheduler, keeps the check free and engine-agnostic; a
request in its prefill still counts as waiting, which errs on the side of "full".
"""

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

from nanoserve.server.api.chat_protocol import ChatCompletionRequest
from nanoserve.server.api.protocol import CompletionRequest, LegacyRequest
from nanoserve.server.engine.interface import (
    ChoiceUpdate,
    Engine,
    EngineDead,
    EngineRejected,
    Sampling,
    Update,
)
from nanoserve.server.errors import APIError, internal, invalid, unavailable
from nanoserve.server.observability.access_log import Exchange
from nanoserve.server.observability.metrics import Metrics
from nanoserve.server.security.accounting import Accounting
from nanoserve.server.security.ratelimit import RateLimiter, Ticket
from nanoserve.server.serving.chat import CHAT, chat_work
from nanoserve.server.serving.chat_template import ChatTemplate
from nanoserve.server.serving.deadline import Alarm
from nanoserve.server.serving.job import COMPLETION, Job, Shape, chunk_event, response_json
from nanoserve.server.serving.prepare import Prepared, completion_work, legacy_work
from nanoserve.server.serving.sliding_window import cropped
from nanoserve.server.settings import Settings

log = logging.getLogger("nanoserve.service")

Request = CompletionRequest | LegacyRequest | ChatCompletionRequest
ENGINE_GONE = "The inference engine stopped; retry on another replica."
TIMEOUT_HEADER = b"x-request-timeout"  # seconds; lowers --request-timeout for one request
TIMEOUT_FINISH = "timeout"  # finish_reason of a choice cut short by its deadline
# Prompts longer than this (characters) are tokenized in a worker thread: a Hugging Face
# tokenizer takes ~0.3 ms per 1,000 characters on one of our CPU cores (0.6 ms for 2,048 on a
# busy one), time every other stream on the event loop would wait. Shorter prompts cost less
# than the hop to a thread.
OFFLOAD_CHARS = 2048
QUEUE_TIMEOUT = (
    "The request could not start before its deadline (--request-timeout, X-Request-Timeout, "
    "or this replica shutting down); retry later or on another replica."
)


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
        version: str | None = None,
    ):
        self.engine = engine
        self.chat_template = chat_template
        self.settings = settings
        self.metrics = metrics
        self.limiter = limiter
        self.accounting = accounting
        self.queued_requests = 0  # admitted, no engine output yet (see the module docstring)
        self.queued_tokens = 0  # their prompt tokens
        self.jobs: set[Job] = set()  # admitted and not yet settled
        self.version = version  # the weights the engine holds (models/version.py)
        self._unswapped = asyncio.Event()  # clear while a swap waits for, or does, its work
        self._unswapped.set()
        self._started = 0  # jobs running on `version` (past the gate, not yet ended)
        self._none_started = asyncio.Event()
        self._none_started.set()

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
        deadline = self._deadline(call.exchange)
        if _prompt_chars(request) > OFFLOAD_CHARS:
            work, prefix, shape = await asyncio.to_thread(self._work, request)
        else:
            work, prefix, shape = self._work(request)
        try:
            self.engine.check(engine_sampling(work.sampling))
        except EngineRejected as e:
            raise invalid(str(e)) from e
        job_id = f"{prefix}-{call.exchange.request_id}"
        keep = self.settings.log_text_chars
        job = Job(job_id, call.exchange, self.engine.info.name, work, None, shape, keep)
        job.deadline = deadline
        self._enqueue(job)  # before any await: concurrent admissions see each other
        try:
            if call.ticket is not None:
                await self.limiter.reserve_tokens(call.ticket, job.max_tokens_total)
                job.ticket = call.ticket
        except BaseException:
            self._dequeue(job)
            raise
        self.jobs.add(job)
        return job

    def cut_off(self, at: float) -> None:
        """Bring every open job's deadline forward to `at` (perf_counter): a drain ends them
        the documented way (the text so far with finish_reason "timeout", or a 503 for one not
        started) before uvicorn's graceful shutdown would cut them with a bare 500."""
        for job in self.jobs:
            job.deadline = min(job.deadline, at)
            for timer in job.timers:
                timer.reschedule(_loop_clock(job.deadline))

    def _deadline(self, exchange: Exchange) -> float:
        """The request's deadline (perf_counter): --request-timeout after arrival, or sooner
        if the client sent X-Request-Timeout."""
        seconds = self.settings.request_timeout
        raw = dict(exchange.scope["headers"]).get(TIMEOUT_HEADER)
        if raw is not None:
            try:
                asked = float(raw)
            except ValueError:
                asked = math.nan
            if not (asked > 0 and math.isfinite(asked)):
                raise invalid(
                    "The X-Request-Timeout header must be a positive number of seconds; got "
                    f"{raw.decode(errors='replace')[:40]!r}.",
                    param="X-Request-Timeout",
                )
            seconds = min(seconds, asked)
        return exchange.started + seconds

    def _enqueue(self, job: Job) -> None:
        """Take a place in the backlog, or 503 at once if it is full. A lone request always
        gets in, so a prompt longer than max_queued_tokens is not refused forever."""
        s, tokens = self.settings, job.prompt_tokens
        if self.queued_requests and (
            self.queued_requests >= s.max_queued_requests
            or self.queued_tokens + tokens > s.max_queued_tokens
        ):
            raise unavailable(
                f"This replica is full ({self.queued_requests} requests, {self.queued_tokens} "
                "prompt tokens waiting for the engine); retry shortly or on another replica.",
                reason="queue_full",
            )
        self.queued_requests += 1
        self.queued_tokens += tokens
        job.queued = True

    def _dequeue(self, job: Job) -> None:
        """Leave the backlog: at the job's first engine output, or when it ends (idempotent)."""
        if job.queued:
            job.queued = False
            self.queued_requests -= 1
            self.queued_tokens -= job.prompt_tokens

    async def settle(self, job: Job) -> None:
        """Charge what `job` used, give back the unused reservation, write its access line.
        Idempotent: the end of a run, of a stream and the response's background task may all
        call it (a stream abandoned by its client is settled by the background task)."""
        if job.settled:
            return
        job.settled = True
        self._dequeue(job)
        self.jobs.discard(job)
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
            async with self._on_one_version(job):
                finals = await asyncio.gather(
                    *(self._final(job, i) for i in range(len(job.work.prompts)))
                )
            job.status = 200
        except EngineDead as e:
            raise _failed(job, unavailable(ENGINE_GONE, reason="engine_error")) from e
        except EngineRejected as e:
            raise _failed(job, invalid(str(e))) from e
        except APIError as e:  # its deadline passed before the engine started on it
            raise _failed(job, e) from e
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
        sent = False  # has an event gone out (and with it, the 200)?
        try:
            async with self._on_one_version(job):
                async for event in self._events(job, seen):
                    sent = True
                    yield event
            if job.work.include_usage:
                yield chunk_event(job, [], job.usage())
            job.status = 200
        except Exception as e:
            err = _api_error(e, job)
            if not sent:  # nothing sent yet: a real status (a load balancer retries a 503)
                raise _failed(job, err) from e
            # the 200 is sent: the failure is the stream's last event, and the access line's
            # reason
            yield _failed(job, err, 200).sse_event()
        finally:  # a client that left closed us: status None, settled as 499
            await self.settle(job)
        yield "data: [DONE]\n\n"

    async def _events(self, job: Job, seen: set[int]) -> AsyncIterator[str]:
        """The stream's events: a keep-alive comment, or a chunk of deltas."""
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

    @contextlib.asynccontextmanager
    async def _on_one_version(self, job: Job) -> AsyncIterator[None]:
        """Run `job` wholly on one version of the weights: it starts only while no swap is
        under way (waiting, within its deadline, for one to end), and a swap waits for every
        job that started to end."""
        if not self._unswapped.is_set():
            try:
                async with asyncio.timeout_at(_loop_clock(job.deadline)):
                    await self._unswapped.wait()
            except TimeoutError as e:
                error = unavailable(QUEUE_TIMEOUT, reason="queue_timeout", code="queue_timeout")
                raise error from e
        job.version = self.version
        self._started += 1
        self._none_started.clear()
        try:
            yield
        finally:
            self._started -= 1
            if self._started == 0:
                self._none_started.set()

    async def swap(self, load: Callable[[], Awaitable[None]], version: str) -> None:
        """Replace the engine's weights with `load()` between jobs: new jobs wait, the started
        ones finish on the old version, then `load` runs and the new jobs start on `version`.
        If `load` fails, the old version goes on serving."""
        self._unswapped.clear()
        try:
            await self._none_started.wait()
            await load()
            self.version = version
        finally:
            self._unswapped.set()

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
        async for update in _within_deadline(job, i, updates, asked.n):
            self._dequeue(job)
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
        # a comment after `ping` s without a token keeps proxies with an idle timeout from
        # closing a slow stream (an Alarm, not asyncio.timeout or wait_for: no timer per token)
        ping = self.settings.sse_ping_interval or math.inf
        loop = asyncio.get_running_loop()
        quiet = Alarm(loop.time() + ping)
        try:
            remaining = len(tasks)
            while remaining:
                try:
                    async with quiet:
                        i, item = await queue.get()
                except TimeoutError:
                    i, item = 0, None  # `ping` s without a token: a keep-alive tick
                quiet.later(loop.time() + ping)  # the next tick is `ping` s from now
                if item is None:
                    yield 0, None
                elif item is done:
                    remaining -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield i, item
        finally:
            quiet.close()
            # Client gone or a failure: cancelling the pumps closes the engine generators, which
            # aborts the requests inside vLLM so they stop using the batch.
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _loop_clock(deadline: float) -> float:
    """A job's deadline (perf_counter, as requests are timed) on the event loop's clock, which
    the loop's timers use."""
    return asyncio.get_running_loop().time() + deadline - time.perf_counter()


async def _within_deadline(
    job: Job, i: int, updates: AsyncIterator[Update], n: int
) -> AsyncIterator[Update]:
    """Prompt `i`'s `updates` until the job's deadline. Then the engine request is cancelled
    (vLLM aborts it) and: a job that got no output at all is a 503 (`queue_timeout`: it waited
    too long; another replica may do better); otherwise each open choice ends here, with what
    it has so far and finish_reason "timeout"."""
    it = aiter(updates)
    open_choices = set(range(n))
    # one timer for the whole stream, not one per token (alarm.py)
    alarm = Alarm(_loop_clock(job.deadline))
    job.timers.add(alarm)  # so that a drain can bring the deadline forward
    try:
        while True:
            try:
                # only the wait for the engine is timed, never our own yield (a slow client)
                async with alarm:
                    update = await anext(it)
            except StopAsyncIteration:
                return
            except TimeoutError:
                break
            open_choices.difference_update(c.index for c in update.choices if c.finish_reason)
            yield update
    finally:
        alarm.close()
        job.timers.discard(alarm)
    if job.queued:
        raise unavailable(QUEUE_TIMEOUT, reason="queue_timeout", code="queue_timeout")
    ended = [ChoiceUpdate(k, "", [], None, TIMEOUT_FINISH) for k in sorted(open_choices)]
    yield Update(job.work.prompts[i].token_ids, ended, None, True)


def _api_error(e: Exception, job: Job) -> APIError:
    """The error a client gets for a job that failed with `e`."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, EngineRejected):
        return invalid(str(e))
    if isinstance(e, EngineDead):
        return unavailable(ENGINE_GONE, reason="engine_error")
    log.exception("job %s failed", job.id, exc_info=e)  # a bug
    return internal()


def _prompt_chars(request: Request) -> int:
    """Characters the request's text prompts add up to (how long tokenizing them takes)."""
    if isinstance(request, ChatCompletionRequest):
        return sum(len(str(m.content or "")) for m in request.messages)
    prompt = request.prompt
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, list):
        return sum(len(p) for p in prompt if isinstance(p, str))
    return 0


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

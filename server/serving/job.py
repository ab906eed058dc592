"""A completion job, and how its results are shaped the OpenAI way.

Choices are ordered prompt-major (`index = prompt_i * n + j`, as OpenAI does with a list of
prompts), usage is summed over prompts and choices, and stream chunks carry the same `id` and
`created` throughout, with `usage: null` except on the optional last usage chunk.
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from nanoserve.server.engine.interface import ChoiceUpdate, TokenLogprob, Update
from nanoserve.server.observability.access_log import Exchange, Outcome
from nanoserve.server.security.ratelimit import Ticket
from nanoserve.server.serving.prepare import Prepared

# One encoder for every chunk: json.dumps with options builds a new JSONEncoder per call
_compact = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True)
class Shape:
    """How a job's results are written: the `object` names, and one choice (or streamed delta)
    as `choice(job, prompt_i, update, choice_update, decode, first) -> dict`."""

    object: str
    chunk_object: str
    choice: Callable[..., dict]


@dataclass(eq=False)  # a job is itself, not its fields: the service keeps a set of them
class Job:
    """One admitted request: its engine work, who pays for it, and what it has used so far."""

    id: str  # "cmpl-<request id>" (or "gen-" for /generate): also the SDK's completion id
    exchange: Exchange  # the HTTP request: its id, arrival time and access line
    model: str
    work: Prepared
    ticket: Ticket | None  # the caller's admission; None on an unmetered path
    shape: Shape  # completion or chat JSON
    keep_text: int = 0  # characters of prompt and completion for the access line (0: none)
    created: int = field(default_factory=lambda: int(time.time()))
    completion_tokens: int = 0
    # How it ended: the status and rejection reason of its access line. Status None: it never
    # ended on its own (the client left), which settle() reports as 499.
    status: int | None = None
    reason: str | None = None
    settled: bool = False  # usage charged and unused tokens given back (exactly once)
    deadline: float = math.inf  # perf_counter; past it the job ends (service._within_deadline)
    queued: bool = False  # in the service's backlog: admitted, no engine output yet
    timers: set = field(default_factory=set)  # the Alarms bounding its waits on the engine
    first_token_at: float | None = None  # perf_counter
    last_token_at: float | None = None
    gaps: list[tuple[float, int]] = field(default_factory=list)  # streams: (s per token, tokens)
    finished: dict[int, str] = field(default_factory=dict)  # choice index -> finish_reason
    text: str = ""  # choice 0's text, up to keep_text characters
    # the weights it runs on (models/version.py), set when it starts: the `system_fingerprint`
    version: str | None = None

    @property
    def request_id(self) -> str:  # engine request ids are "<request id>-<prompt index>"
        return self.exchange.request_id

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p.token_ids) for p in self.work.prompts)

    @property
    def max_tokens_total(self) -> int:
        """Worst case, reserved at admission: every prompt, plus max_tokens for each choice."""
        w = self.work
        generated = 0 if w.discard_output else w.sampling.max_tokens * w.sampling.n
        return sum(len(p.token_ids) + generated for p in w.prompts)

    @cached_property
    def chunk_head(self) -> str:
        """`{"id":...,"object":...,"created":...,"model":...,"system_fingerprint":...,"choices":`
        of its stream chunks."""
        head = {"id": self.id, "object": self.shape.chunk_object, "created": self.created}
        head |= {"model": self.model, "system_fingerprint": self.version}
        return _compact(head)[:-1] + ',"choices":'

    def usage(self) -> dict:
        p, c = self.prompt_tokens, self.completion_tokens
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def count(self, i: int, c: ChoiceUpdate) -> None:
        """Add prompt `i`'s choice update to what this job generated (scoring generates
        nothing), and note its finish reason."""
        if not self.work.discard_output:
            self.completion_tokens += len(c.token_ids)
            if c.token_ids and self.first_token_at is None:
                self.first_token_at = time.perf_counter()
        index = i * self.work.sampling.n + c.index
        if c.finish_reason is not None:
            self.finished[index] = c.finish_reason
        if index == 0 and len(self.text) < self.keep_text:
            self.text = (self.text + c.text)[: self.keep_text]

    def delivered(self, steps: int) -> None:
        """A stream event carrying `steps` new tokens per choice went out: note the gap since
        the previous one, spread over its tokens (a lagging client gets merged deltas)."""
        if self.work.discard_output:  # scoring: nothing generated, nothing delivered
            return
        now = time.perf_counter()
        if self.last_token_at is not None and steps:
            self.gaps.append(((now - self.last_token_at) / steps, steps))
        if steps:
            self.last_token_at = now

    def outcome(self) -> Outcome:
        """What the access line and the metrics get to know of this job once it ended."""
        w = self.work
        unfinished = "abort" if self.status is None else "error"
        choices = len(w.prompts) * w.sampling.n
        prompt_text = None
        if self.keep_text:
            text = w.prompts[0].text
            prompt_text = text if text is not None else str(w.prompts[0].token_ids)
            prompt_text = prompt_text[: self.keep_text]
        return Outcome(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            first_token_at=self.first_token_at,
            gaps=self.gaps,
            finish_reasons=[self.finished.get(k, unfinished) for k in range(choices)],
            disconnected=self.status is None,
            prompt_text=prompt_text,
            completion_text=self.text if self.keep_text else None,
            model_version=self.version,
        )


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


def choice_json(job: Job, i: int, update: Update, c: ChoiceUpdate, decode, first: bool) -> dict:
    """One choice of prompt `i` (or one streamed delta of it). `first`: echo the prompt in
    front, with its logprobs when asked (lm-eval-harness scores prompts this way)."""
    w = job.work
    text = "" if w.discard_output else c.text
    positions: list[TokenLogprob | None] = [] if w.discard_output else list(c.logprobs or [])
    first_token = ""
    if w.echo and first:
        prompt = w.prompts[i]
        if prompt.text is None:  # a token-id prompt: decoded once, when first echoed
            prompt.text = decode(prompt.token_ids)
        text = prompt.text + text
        if w.logprobs is not None:
            positions = list(update.prompt_logprobs or []) + positions
            first_token = decode(prompt.token_ids[:1])
    logprobs = _logprobs_json(positions, first_token) if w.logprobs is not None else None
    return {
        "index": i * w.sampling.n + c.index,
        "text": text,
        "logprobs": logprobs,
        "finish_reason": c.finish_reason,
    }


def response_json(job: Job, choices: list[dict]) -> dict:
    """The whole completion as one response body."""
    return {
        "id": job.id,
        "object": job.shape.object,
        "created": job.created,
        "model": job.model,
        "system_fingerprint": job.version,
        "choices": choices,
        "usage": job.usage(),
    }


def chunk_event(job: Job, choices: list[dict], usage: dict | None = None) -> str:
    """One SSE event. With include_usage every chunk has a `usage` key, null but on the last.
    The same bytes as encoding the whole body, but the part every chunk of the job shares is
    encoded once (a stream sends one event per token)."""
    tail = f',"usage":{_compact(usage)}}}' if job.work.include_usage else "}"
    return f"data: {job.chunk_head}{_compact(choices)}{tail}\n\n"


COMPLETION = Shape("text_completion", "text_completion", choice_json)

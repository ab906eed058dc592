"""Validate a request against this server and model, and turn it into engine work (`Prepared`).

Everything here raises `errors.APIError` (400/404) naming the parameter to fix, before any engine
work starts: bad input is never a 5xx (the openai SDK would send it three times).
"""

from dataclasses import dataclass

from nanoserve.convert.tokenizer import unknown_chars
from nanoserve.server.api.protocol import CompletionRequest, LegacyRequest
from nanoserve.server.engine.interface import ModelInfo, Sampling
from nanoserve.server.errors import APIError, invalid, model_not_found
from nanoserve.server.settings import Settings

MAX_STOP_CHARS = 256  # a stop string longer than any useful one only costs matching time


@dataclass
class PreparedPrompt:
    token_ids: list[int]
    text: str | None  # as sent, or None for token-id prompts (decoded lazily for echo)


@dataclass
class Prepared:
    """Engine work for one request: its prompts, and what to send back of the results."""

    prompts: list[PreparedPrompt]
    sampling: Sampling
    echo: bool
    logprobs: int | None
    discard_output: bool  # max_tokens=0 with echo: score the prompt, generate nothing
    include_usage: bool
    crop_context: bool = False  # past the window, crop as nanoGPT does (window.py)
    stream: bool = False  # the client asked for server-sent events (chat's delta shape)


def _prompt_list(prompt) -> list[str | list[int]]:
    """Normalise OpenAI's four prompt forms to a list of str | list[int]."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(p, int) for p in prompt):
        return [prompt]
    return list(prompt)


def check_token_ids(ids: list[int], info: ModelInfo, param: str) -> None:
    """400 naming `param` if an id is outside the model's vocabulary."""
    bad = [t for t in ids if not 0 <= t < info.vocab_size]
    if bad:
        raise invalid(
            f"Token id {bad[0]} is outside the vocabulary (0..{info.vocab_size - 1}).", param
        )


def known_characters(text: str, info: ModelInfo, param: str, what: str) -> None:
    """400 naming `param` if a character-level model does not know a character of `text`."""
    if info.char_vocab is None:
        return
    unknown = unknown_chars(text, info.char_vocab)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:10])
        more = f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
        raise invalid(
            f"{what} has characters this character-level model does not know: "
            f"{shown}{more}. Remove or replace them.",
            param,
            code="unknown_characters",
        )


def _encode(text: str, i: int, info: ModelInfo, encode) -> list[int]:
    if text == "":
        raise invalid(f"Prompt {i} is empty; send at least one character.", "prompt")
    known_characters(text, info, "prompt", f"Prompt {i}")
    return encode(text)


def _prompts(req: CompletionRequest, info: ModelInfo, s: Settings, encode) -> list[PreparedPrompt]:
    prompts = _prompt_list(req.prompt)
    if not prompts:
        raise invalid("'prompt' is an empty list; send at least one prompt.", "prompt")
    if len(prompts) > s.max_prompts:
        raise invalid(f"At most {s.max_prompts} prompts per request; got {len(prompts)}.", "prompt")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            ids = _encode(p, i, info, encode)
            text = p
        else:
            ids, text = list(p), None
            check_token_ids(ids, info, "prompt")
        if not ids:
            raise invalid(f"Prompt {i} has no tokens; send at least one.", "prompt")
        out.append(PreparedPrompt(ids, text))
    return out


def _check_length(prompts: list[PreparedPrompt], max_tokens: int, info: ModelInfo) -> None:
    # `vllm serve` silently clamps max_tokens to what fits (HTTP 200, fewer tokens than asked);
    # a clear 400 tells the caller what to change.
    for i, p in enumerate(prompts):
        n = len(p.token_ids)
        if n + max_tokens > info.max_model_len:
            room = info.max_model_len - n
            fix = (
                f"lower max_tokens to {room} or shorten the prompt"
                if room > 0
                else "shorten the prompt"
            )
            raise APIError(
                f"This model's maximum context length is {info.max_model_len} tokens; prompt {i} "
                f"has {n} tokens and max_tokens is {max_tokens} ({n + max_tokens} in all): {fix}.",
                param="max_tokens" if room > 0 else "prompt",
                code="context_length_exceeded",
            )


def served_names(info: ModelInfo, s: Settings) -> tuple[str, ...]:
    """The served name first (responses carry it), then the aliases (--model-alias)."""
    return (info.name, *(a for a in dict.fromkeys(s.model_aliases) if a != info.name))


def check_model(name: str | None, info: ModelInfo, s: Settings) -> None:
    """404 unless `name` (when given) is one of the served names."""
    names = served_names(info, s)
    if name is not None and name not in names:
        raise model_not_found(name, names)


def _check_request(req: CompletionRequest, info: ModelInfo, s: Settings) -> None:
    check_model(req.model, info, s)
    if req.suffix is not None:
        raise invalid("'suffix' is not supported by this model (no fill-in-the-middle).", "suffix")
    if req.best_of is not None and req.best_of != req.n:
        raise invalid(f"'best_of' must equal n ({req.n}) when given; got {req.best_of}.", "best_of")
    if req.n > s.max_n:
        raise invalid(f"'n' is at most {s.max_n} on this server; got {req.n}.", "n")
    if req.logprobs is not None and req.logprobs > s.max_logprobs:
        raise invalid(
            f"'logprobs' is at most {s.max_logprobs} on this server; got {req.logprobs}.",
            "logprobs",
        )
    if req.stream_options is not None and not req.stream:
        raise invalid("'stream_options' is only allowed when 'stream' is true.", "stream_options")
    for stop in req.stops:
        if not stop or len(stop) > MAX_STOP_CHARS:
            raise invalid(f"Each stop string must be 1 to {MAX_STOP_CHARS} characters.", "stop")
    if req.max_tokens == 0 and not req.echo:
        raise invalid(
            "'max_tokens' must be at least 1 (0 is allowed only with echo).", "max_tokens"
        )
    if req.max_tokens is not None and req.min_tokens > req.max_tokens:
        raise invalid(
            f"'min_tokens' ({req.min_tokens}) is more than max_tokens ({req.max_tokens}).",
            "min_tokens",
        )
    check_token_ids(req.stop_token_ids or [], info, "stop_token_ids")


def _check_crop(req: CompletionRequest, max_tokens: int, s: Settings) -> None:
    """crop_context runs past the window one single-token engine request at a time: what needs
    one request to see the whole choice (several choices, stop strings, penalties over the
    output, min_tokens, prompt scoring) can't be combined with it."""
    if max_tokens > s.crop_max_tokens:
        raise invalid(
            f"With crop_context, 'max_tokens' is at most {s.crop_max_tokens} on this server.",
            "max_tokens",
        )
    refused = {
        "n": req.n != 1,
        "stop": bool(req.stops),
        "presence_penalty": req.presence_penalty != 0,
        "frequency_penalty": req.frequency_penalty != 0,
        "repetition_penalty": req.repetition_penalty != 1,
        "min_tokens": req.min_tokens != 0,
        "logprobs": req.echo and req.logprobs is not None,
    }
    for param, bad in refused.items():
        if bad:
            raise invalid(f"'{param}' can't be combined with crop_context.", param)


def _logit_bias(req: CompletionRequest, info: ModelInfo) -> dict[int, float] | None:
    if not req.logit_bias:
        return None
    bias = {}
    for key, value in req.logit_bias.items():
        if not key.lstrip("-").isdigit() or not 0 <= int(key) < info.vocab_size:
            raise invalid(f"logit_bias key {key!r} is not a token id of this model.", "logit_bias")
        bias[int(key)] = value  # the value's range is checked by the protocol
    return bias


def _top_k(top_k: int | None, info: ModelInfo) -> int:
    """vLLM's spelling (0: off). A k of the whole vocabulary or more keeps every token, so it is
    off too (nanoGPT's sample.py clamps the same way; the seed's default top_k=200 exceeds a
    65-character vocabulary)."""
    if top_k is None or top_k <= 0 or top_k >= info.vocab_size:
        return 0
    return top_k


def completion_work(req: CompletionRequest, info: ModelInfo, s: Settings, encode) -> Prepared:
    """Check a /v1/completions request and build its engine work; APIError names the bad param."""
    _check_request(req, info, s)
    prompts = _prompts(req, info, s, encode)
    longest = max(len(p.token_ids) for p in prompts)
    max_tokens = req.max_tokens
    if max_tokens is None:  # null: as many as fit, as vLLM does
        max_tokens = max(info.max_model_len - longest, 1)
    discard = max_tokens == 0
    max_tokens = max(max_tokens, 1)  # the engine always makes >= 1 token; echo+0 drops it
    if req.crop_context:
        _check_crop(req, max_tokens, s)
    else:
        _check_length(prompts, 0 if discard else max_tokens, info)
    scoring = req.echo and req.logprobs is not None
    sampling = Sampling(
        max_tokens=max_tokens,
        n=req.n,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=_top_k(req.top_k, info),
        min_p=req.min_p,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty,
        seed=req.seed,
        stop=tuple(req.stops),
        stop_token_ids=tuple(req.stop_token_ids or ()),
        ignore_eos=req.ignore_eos,
        min_tokens=req.min_tokens,
        logprobs=req.logprobs,
        prompt_logprobs=req.logprobs if scoring else None,
        logit_bias=_logit_bias(req, info),
    )
    return Prepared(
        prompts,
        sampling,
        req.echo,
        req.logprobs,
        discard,
        req.include_usage,
        req.crop_context,
        req.stream,
    )


def legacy_work(req: LegacyRequest, info: ModelInfo, s: Settings, encode) -> Prepared:
    """The same checks for /generate (empty prompt, unknown characters); past the context
    window it crops as nanoGPT's generate() did for the seed server's clients."""
    prompt = PreparedPrompt(_encode(req.prompt, 0, info, encode), req.prompt)
    if req.max_tokens > s.crop_max_tokens:
        raise invalid(f"'max_tokens' is at most {s.crop_max_tokens} on this server.", "max_tokens")
    sampling = Sampling(
        max_tokens=req.max_tokens, temperature=req.temperature, top_k=_top_k(req.top_k, info)
    )
    # the seed server answered the prompt followed by the new text: echo
    return Prepared(
        [prompt],
        sampling,
        echo=True,
        logprobs=None,
        discard_output=False,
        include_usage=False,
        crop_context=True,
    )

"""Chat Completions over a base model: messages -> one templated prompt -> a completion job.

A chat request is checked for what a base model cannot do, its messages are rendered by the
chat template, and the rest is a /v1/completions request for that prompt (same checks, limits,
usage, metrics and aborts), plus the template's turn-ending stop sequences. Only the JSON differs:
`message`/`delta` instead of `text`, and OpenAI's chat logprobs.
"""

from dataclasses import replace

from jinja2 import TemplateError
from nanoserve.server.api.chat_protocol import ChatCompletionRequest, ChatMessage
from nanoserve.server.api.protocol import CompletionRequest
from nanoserve.server.engine.interface import ChoiceUpdate, ModelInfo, TokenLogprob, Update
from nanoserve.server.errors import APIError, invalid
from nanoserve.server.serving.chat_template import ChatTemplate
from nanoserve.server.serving.job import Job, Shape
from nanoserve.server.serving.prepare import Prepared, completion_work
from nanoserve.server.settings import Settings


def _refuse_unsupported(req: ChatCompletionRequest, s: Settings) -> None:
    """400 for what a base model behind a text template can't do, naming the parameter."""
    if req.tools:
        raise invalid("'tools' is not supported: this base model has no tool calling.", "tools")
    if req.tool_choice not in (None, "none"):
        raise invalid("'tool_choice' is not supported: no tool calling.", "tool_choice")
    if req.response_format is not None and req.response_format.get("type") != "text":
        raise invalid(
            '\'response_format\' must be {"type": "text"}: this base model has no JSON mode.',
            "response_format",
        )
    if req.audio is not None:
        raise invalid("'audio' is not supported: this model reads and writes text.", "audio")
    if req.modalities is not None and set(req.modalities) - {"text"}:
        raise invalid("'modalities' may only be [\"text\"].", "modalities")
    if req.top_logprobs is not None and not req.logprobs:
        raise invalid("'top_logprobs' needs 'logprobs': true.", "top_logprobs")
    if (req.top_logprobs or 0) > s.max_logprobs:
        raise invalid(
            f"'top_logprobs' is at most {s.max_logprobs} on this server; got {req.top_logprobs}.",
            "top_logprobs",
        )


def _content(m: ChatMessage, i: int) -> str:
    if m.role in ("tool", "function"):
        raise invalid(
            f"messages[{i}]: role '{m.role}' needs tools, which are not supported.", "messages"
        )
    if m.content is None or isinstance(m.content, str):
        return m.content or ""
    texts = []
    for part in m.content:
        if part.type != "text" or part.text is None:
            raise invalid(
                f"messages[{i}]: content parts of type '{part.type}' are not supported "
                "(text only).",
                "messages",
            )
        texts.append(part.text)
    return "".join(texts)


def render(
    req: ChatCompletionRequest, template: ChatTemplate, generation_prompt: bool = True
) -> str:
    """The prompt the template makes of `req.messages` ("developer" is OpenAI's "system")."""
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": _content(m, i)}
        for i, m in enumerate(req.messages)
    ]
    try:
        return template.render(messages, generation_prompt)
    except TemplateError as e:  # a template's raise_exception("..."): the conversation's fault
        raise invalid(f"The chat template refused these messages: {e}", "messages") from e


def _as_completion(req: ChatCompletionRequest, prompt: str) -> CompletionRequest:
    return CompletionRequest(
        model=req.model,
        prompt=prompt,
        frequency_penalty=req.frequency_penalty,
        logit_bias=req.logit_bias,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        max_tokens=req.max_completion_tokens or req.max_tokens,  # None: as many as fit
        n=req.n,
        presence_penalty=req.presence_penalty,
        seed=req.seed,
        stop=req.stop,
        stream=req.stream,
        stream_options=req.stream_options,
        temperature=req.temperature,
        top_p=req.top_p,
        user=req.user,
        top_k=req.top_k,
        min_p=req.min_p,
        repetition_penalty=req.repetition_penalty,
        min_tokens=req.min_tokens,
        ignore_eos=req.ignore_eos,
        stop_token_ids=req.stop_token_ids,
    )


def chat_work(
    req: ChatCompletionRequest, template: ChatTemplate, info: ModelInfo, s: Settings, encode
) -> Prepared:
    """Check a chat request and build its engine work; APIError names the bad parameter."""
    _refuse_unsupported(req, s)
    prompt = render(req, template)
    try:
        work = completion_work(_as_completion(req, prompt), info, s, encode)
    except APIError as e:
        if e.param == "prompt":  # the prompt is what the template made of the messages
            e.param = "messages"
            e.message = f"The conversation, as the chat template renders it: {e.message}"
        raise
    # the reply ends where the template would start the next message
    work.sampling = replace(work.sampling, stop=work.sampling.stop + template.stops)
    return work


def _top(pos: TokenLogprob, k: int) -> list[dict]:
    return [
        {"token": t, "logprob": lp, "bytes": list(t.encode())}
        for t, lp in list(pos.top.items())[:k]
    ]


def _logprobs_json(positions: list[TokenLogprob] | None, k: int) -> dict:
    """OpenAI's chat logprobs: per token its logprob, UTF-8 bytes and the k likeliest tokens."""
    content = [
        {
            "token": p.token,
            "logprob": p.logprob,
            "bytes": list(p.token.encode()),
            "top_logprobs": _top(p, k),
        }
        for p in positions or []
    ]
    return {"content": content, "refusal": None}


def choice_json(job: Job, i: int, update: Update, c: ChoiceUpdate, decode, first: bool) -> dict:
    """One chat choice (`message`), or one streamed delta of it (`delta`; the role goes in the
    first delta of each choice, as OpenAI sends it)."""
    w = job.work
    body: dict = {"index": i * w.sampling.n + c.index}
    if w.stream:
        body["delta"] = {"role": "assistant", "content": c.text} if first else {"content": c.text}
    else:
        body["message"] = {"role": "assistant", "content": c.text, "refusal": None}
    body["logprobs"] = _logprobs_json(c.logprobs, w.logprobs) if w.logprobs is not None else None
    body["finish_reason"] = c.finish_reason
    return body


CHAT = Shape("chat.completion", "chat.completion.chunk", choice_json)

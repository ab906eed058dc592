"""The HTTP side of the two naive baseline servers: `/v1/completions`, one request at a time.

This is the design the seed document describes (and the issue measures against): a FastAPI app
that holds one lock around generation, so requests queue and nothing is batched. It speaks just
enough of the OpenAI Completions API for `vllm bench serve --backend openai`: a str or token-id
prompt, `max_tokens`, `temperature`, non-streaming responses and SSE streams with
`stream_options.include_usage`. No auth (the seed had none); the benchmark's bearer is ignored.
"""

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from tokenizers import Tokenizer

# (prompt ids, max_tokens, temperature) -> new token ids, one at a time
Generate = Callable[[list[int], int, float], Iterator[int]]


class CompletionRequest(BaseModel):
    model: str | None = None
    prompt: str | list[int]
    max_tokens: int = 16
    temperature: float = 1.0
    stream: bool = False
    stream_options: dict | None = None  # only include_usage is read


def _chunk(head: dict, text: str, finish: str | None) -> dict:
    """A completion body (or stream chunk) with one choice; `head` holds id, created, model."""
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return head | {"object": "text_completion", "choices": [choice], "usage": None}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


async def _events(
    head: dict, req: CompletionRequest, prompt_tokens: int, texts: AsyncIterator[str]
) -> AsyncIterator[str]:
    """The SSE stream: a chunk per token, the usage chunk if asked for, then [DONE]."""
    n = 0
    async for text in texts:
        n += 1  # no stop conditions: the max_tokens-th token is the last, as in vLLM's streams
        yield _sse(_chunk(head, text, "length" if n == req.max_tokens else None))
    if n < req.max_tokens:
        yield _sse(_chunk(head, "", "length"))
    if (req.stream_options or {}).get("include_usage"):
        yield _sse(_chunk(head, "", None) | {"choices": [], "usage": _usage(prompt_tokens, n)})
    yield _sse("[DONE]")


def create_app(name: str, tokenizer: Tokenizer, generate: Generate) -> FastAPI:
    """The app serving `generate` as model `name`; `generate` runs in a worker thread."""
    app = FastAPI()
    lock = asyncio.Lock()  # one request at a time: the seed's design

    async def texts(ids: list[int], req: CompletionRequest) -> AsyncIterator[str]:
        async with lock:
            steps = generate(ids, req.max_tokens, req.temperature)
            # one step per thread hop keeps the event loop free (health checks, new connections)
            while (tok := await asyncio.to_thread(next, steps, None)) is not None:
                yield tokenizer.decode([tok])

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": name}
        ids = req.prompt if isinstance(req.prompt, list) else tokenizer.encode(req.prompt).ids
        if req.stream:
            events = _events(head, req, len(ids), texts(ids, req))
            return StreamingResponse(events, media_type="text/event-stream")
        pieces = [t async for t in texts(ids, req)]
        return _chunk(head, "".join(pieces), "length") | {"usage": _usage(len(ids), len(pieces))}

    @app.get("/v1/models")
    async def models() -> dict:
        card = {"id": name, "object": "model", "created": 0, "owned_by": "bench"}
        return {"object": "list", "data": [card]}

    @app.get("/ready")
    async def ready() -> dict:
        return {"status": "ok"}

    return app


def main(doc: str, make_generate: Callable[[Path], Generate]) -> None:
    """`SERVER MODEL_DIR --port P`: serve a converted directory with `make_generate(dir)`."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("model_dir", type=Path, help="a directory written by `nanoserve convert`")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    tokenizer = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    app = create_app(args.model_dir.name, tokenizer, make_generate(args.model_dir))
    # loopback only; keep-alive as nanoserve's default, so clients reuse connections alike
    uvicorn.run(app, host="127.0.0.1", port=args.port, timeout_keep_alive=75, access_log=False)

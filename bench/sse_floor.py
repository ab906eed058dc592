"""The floor for bench/frontend.py: a bare FastAPI `/v1/completions` doing what nanoserve's
front end does around an instant engine, and nothing else (no auth, limits, metrics or logs).

    python -m bench.sse_floor --port PORT

The same bodies and the same SSE chunks as nanoserve over its fake engine (one `asyncio.sleep(0)`
per token, as the fake engine yields), served by uvicorn's defaults (httptools, uvloop).
"""

import argparse
import asyncio
import json
import time
import uuid

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

ALPHABET = "abcdefghijklmnopqrstuvwxyz \n:"  # as tests/support/fake_engine.py


def _chunk(head: dict, text: str, finish: str | None) -> str:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    body = head | {"object": "text_completion", "choices": [choice]}
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


async def _tokens(n: int):
    for i in range(n):
        await asyncio.sleep(0)  # the fake engine's one await per token
        yield ALPHABET[i % len(ALPHABET)]


async def _events(head: dict, n: int, usage: bool):
    i = 0
    async for text in _tokens(n):
        i += 1
        yield _chunk(head, text, "length" if i == n else None)
    if usage:
        counts = {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}
        body = head | {"object": "text_completion", "choices": [], "usage": counts}
        yield f"data: {json.dumps(body, separators=(',', ':'))}\n\n"
    yield "data: [DONE]\n\n"


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await request.json()
        n = int(req.get("max_tokens", 16))
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": "fake"}
        if req.get("stream"):
            usage = (req.get("stream_options") or {}).get("include_usage", False)
            return StreamingResponse(_events(head, n, usage), media_type="text/event-stream")
        text = "".join([t async for t in _tokens(n)])
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        usage = {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}
        body = head | {"object": "text_completion", "choices": [choice], "usage": usage}
        return JSONResponse(body)

    @app.get("/ready")
    async def ready() -> dict:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser("python -m bench.sse_floor", description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, access_log=False)

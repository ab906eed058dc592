"""POST /generate: the seed server's contract, unchanged for its old clients.

Body `{"prompt", "max_tokens": 100, "temperature": 0.8, "top_k": 200}` ->
`{"text": prompt + generated text, "tokens_generated": n}`; errors as FastAPI's `{"detail": ...}`
(errors.py keeps that style for this path).
"""

from fastapi import APIRouter, Request

from .completions import Job
from .disconnect import unless_disconnected
from .generation import Sampling
from .guard import reserve_tokens
from .prepare import Prepared, PreparedPrompt, check_length, encode_prompt
from .protocol import GenerateRequest, GenerateResponse
from .routes import _runtime

router = APIRouter()


@router.post("/generate", response_model=GenerateResponse)
async def generate(body: GenerateRequest, request: Request):
    service = _runtime(request).service()
    engine = service.engine
    # the same checks as /v1/completions: empty prompt, unknown characters, context length
    prompt = PreparedPrompt(encode_prompt(body.prompt, 0, engine.info, engine.encode), body.prompt)
    check_length([prompt], body.max_tokens, engine.info)
    sampling = Sampling(
        max_tokens=body.max_tokens, temperature=body.temperature, top_k=body.top_k or 0
    )
    work = Prepared(
        [prompt], sampling, echo=True, logprobs=None, discard_output=False, include_usage=False
    )
    rid = request.state.request_id
    job = Job(id=f"gen-{rid}", model=engine.info.name, work=work)
    await reserve_tokens(request, job.max_tokens_total)
    request.state.job = job
    result = await unless_disconnected(request, service.run(job, rid))
    if not isinstance(result, dict):
        return result
    return GenerateResponse(
        text=result["choices"][0]["text"], tokens_generated=result["usage"]["completion_tokens"]
    )

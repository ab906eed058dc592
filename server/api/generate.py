"""POST /generate: the seed server's contract, for its old clients.

Body `{"prompt", "max_tokens": 100, "temperature": 0.8, "top_k": 200}` ->
`{"text": prompt + generated text, "tokens_generated": n}`. It goes through the same service as
/v1/completions (same checks, limits and usage); errors follow the rule in errors.py.
"""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from nanoserve.server.api.openai import call_of, service_of, version_header
from nanoserve.server.api.protocol import LegacyRequest, LegacyResponse
from nanoserve.server.serving.disconnect import unless_disconnected

router = APIRouter()


@router.post("/generate", response_model=LegacyResponse)
async def legacy_completion(body: LegacyRequest, request: Request) -> Response:
    """Legacy: continue `prompt`; the answer holds the prompt followed by the new text."""
    service = service_of(request)
    job = await service.admit(body, call_of(request))
    result = await unless_disconnected(request, service.run(job))
    if not isinstance(result, dict):  # 499: the client left
        return result
    answer = LegacyResponse(
        text=result["choices"][0]["text"], tokens_generated=result["usage"]["completion_tokens"]
    )
    return JSONResponse(answer.model_dump(), headers=version_header(job))

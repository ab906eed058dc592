"""SageMaker's bring-your-own-container contract: `GET /ping` and `POST /invocations`.

SageMaker sends both to port 8080 of the container. `/invocations` takes a /v1/completions body
(it has `model`) or a /generate body (it has none), and answers in that route's shape, streams
included (InvokeEndpointWithResponseStream). With `--sagemaker` the two paths need no
credentials — SageMaker authenticates callers at its endpoint (IAM) and forwards no bearer
token — and they are not rate-limited per caller; every other route keeps its authentication.
Without `--sagemaker` they are authenticated like any route.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from nanoserve.server.api.generate import legacy_completion
from nanoserve.server.api.openai import create_completion
from nanoserve.server.api.probes import ready
from nanoserve.server.api.protocol import CompletionRequest, LegacyRequest
from pydantic import ValidationError

SAGEMAKER_PATHS = frozenset({"/ping", "/invocations"})

router = APIRouter()


@router.get("/ping")
async def ping(request: Request) -> JSONResponse:
    """SageMaker's health check: 200 when requests can be served, else 503 (as /ready)."""
    return await ready(request)


@router.post("/invocations")
async def invocations(request: Request, body: Annotated[dict[str, Any], Body()]) -> Response:
    """A /v1/completions body (with `model`) or a /generate body (without), answered in that
    route's shape."""
    kind = CompletionRequest if "model" in body else LegacyRequest
    try:
        parsed = kind.model_validate(body)
    except ValidationError as e:  # the same 400 naming the parameter as the routes give
        raise RequestValidationError(e.errors()) from e
    if isinstance(parsed, CompletionRequest):
        return await create_completion(parsed, request)
    return await legacy_completion(parsed, request)

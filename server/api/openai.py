"""OpenAI-compatible routes: thin — parse, hand the request to the service, shape the response."""

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from nanoserve.server.api.chat_protocol import ChatCompletionRequest
from nanoserve.server.api.protocol import (
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelDetail,
    ModelList,
    VersionCard,
)
from nanoserve.server.errors import APIError, model_not_found
from nanoserve.server.runtime import Runtime
from nanoserve.server.serving.disconnect import unless_disconnected
from nanoserve.server.serving.job import Job
from nanoserve.server.serving.prepare import served_names
from nanoserve.server.serving.service import Call, CompletionService
from starlette.background import BackgroundTask

router = APIRouter()

VERSION_HEADER = "x-model-version"
CARD = set(ModelCard.model_fields)  # what /v1/models lists of each model
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: don't buffer


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


def service_of(request: Request) -> CompletionService:
    """The completion service, or a 503 while loading, draining or after the engine died."""
    return runtime_of(request).service()


def call_of(request: Request) -> Call:
    """The request's Exchange (middleware) and the caller's admission ticket (security guard)."""
    return Call(request.state.exchange, getattr(request.state, "ticket", None))


async def respond(request: Request, service: CompletionService, job: Job) -> Response:
    """Run an admitted job: a stream of server-sent events, or one JSON body (cancelled, with
    the engine request aborted, if the client leaves first)."""
    if not job.work.stream:
        result = await unless_disconnected(request, service.run(job))
        if not isinstance(result, dict):
            return result
        return JSONResponse(result, headers=version_header(job))
    events = service.stream(job)
    # The 200 goes out with the first event, not before: a job that fails before it (its
    # deadline passed in the queue, the engine died) gets a real status, which a load balancer
    # can retry on another replica, instead of a 200 with an error event.
    first = await unless_disconnected(request, anext(events))
    if isinstance(first, Response):  # the client left while it waited
        return first
    # the background task settles a stream whose client left before its first event went out
    return StreamingResponse(
        _prepend(first, events),
        media_type="text/event-stream",
        headers=SSE_HEADERS | version_header(job),
        background=BackgroundTask(service.settle, job),
    )


def version_header(job: Job) -> dict[str, str]:
    """`x-model-version`: the weights that answered (known once the job started)."""
    return {VERSION_HEADER: job.version} if job.version else {}


async def _prepend(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        yield first
        async for event in rest:
            yield event
    finally:  # closes the job's stream now (its engine requests abort), not at collection
        await rest.aclose()


# responses=: documents the shape in /docs without re-validating every response on the hot path
@router.post("/v1/completions", responses={200: {"model": CompletionResponse}})
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    """Complete one or more prompts (OpenAI Completions), as one JSON body or as a stream of
    server-sent events ending with `data: [DONE]`."""
    service = service_of(request)
    return await respond(request, service, await service.admit(body, call_of(request)))


@router.post("/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    """Continue a conversation (OpenAI Chat Completions): the messages are rendered with the
    chat template (--chat-template) and completed until the template's next turn begins."""
    service = service_of(request)
    return await respond(request, service, await service.admit(body, call_of(request)))


def _cards(request: Request) -> list[ModelDetail]:
    """One card per served name (the served name, then its aliases), as vLLM lists them."""
    service = service_of(request)
    model = runtime_of(request).model
    info = service.engine.info
    return [
        ModelDetail(
            id=name,
            created=info.created,
            max_model_len=info.max_model_len,
            version=service.version,
            status=model.status,
            versions=[VersionCard(**v.card()) for v in model.kept],
            last_error=model.last_error,
        )
        for name in served_names(info, service.settings)
    ]


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """The served model and its aliases (OpenAI's list shape, plus the context length
    `max_model_len`, the `version` answering and the model's `status`)."""
    return ModelList(data=[ModelCard(**c.model_dump(include=CARD)) for c in _cards(request)])


@router.get("/v1/models/{model_id:path}", response_model=ModelDetail)
async def get_model(model_id: str, request: Request) -> ModelDetail:
    """One model by id, with the versions kept and the last reload error; 404 for any name
    that is not served here."""
    cards = _cards(request)
    for card in cards:
        if card.id == model_id:
            return card
    raise model_not_found(model_id, tuple(c.id for c in cards))


@router.get("/v1/usage")
async def usage(request: Request) -> dict:
    """Per-caller requests, tokens and rejections on this replica (admin scope only)."""
    ticket = getattr(request.state, "ticket", None)
    if ticket is None or not ticket.caller.admin:
        raise APIError(
            "This endpoint needs the admin scope (key file `admin`, or a JWT with scope `admin`).",
            status=403,
            type="permission_error",
            code="insufficient_permissions",
        )
    return request.app.state.accounting.report()

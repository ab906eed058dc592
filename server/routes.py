"""OpenAI-compatible routes: thin — parse, call the service, shape the response."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .completions import Job
from .disconnect import unless_disconnected
from .errors import APIError, model_not_found
from .guard import reserve_tokens
from .prepare import prepare
from .protocol import CompletionRequest, CompletionResponse, ModelCard, ModelList
from .runtime import Runtime

router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: don't buffer


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


# responses=: documents the shape in /docs without re-validating every response on the hot path
@router.post("/v1/completions", responses={200: {"model": CompletionResponse}})
async def create_completion(body: CompletionRequest, request: Request):
    runtime = _runtime(request)
    service = runtime.service()
    engine = service.engine
    work = prepare(body, engine.info, request.app.state.settings, engine.encode)
    rid = request.state.request_id
    job = Job(id=f"cmpl-{rid}", model=engine.info.name, work=work)
    service.check(job)
    await reserve_tokens(request, job.max_tokens_total)
    request.state.job = job  # the guard settles the caller's usage from it at the end
    if body.stream:
        return StreamingResponse(
            service.stream(job, rid), media_type="text/event-stream", headers=SSE_HEADERS
        )
    result = await unless_disconnected(request, service.run(job, rid))
    return JSONResponse(result) if isinstance(result, dict) else result


def _card(runtime: Runtime) -> ModelCard:
    info = runtime.service().engine.info
    return ModelCard(id=info.name, created=info.created, max_model_len=info.max_model_len)


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=[_card(_runtime(request))])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, request: Request) -> ModelCard:
    card = _card(_runtime(request))
    if model_id != card.id:
        raise model_not_found(model_id, card.id)
    return card


@router.get("/v1/usage")
async def usage(request: Request) -> dict:
    """Per-caller usage on this replica (admin scope only)."""
    ticket = getattr(request.state, "ticket", None)
    if ticket is None or not ticket.caller.admin:
        raise APIError(
            "This endpoint needs the admin scope (key file `admin`, or a JWT with scope `admin`).",
            status=403,
            type="permission_error",
            code="insufficient_permissions",
        )
    return request.app.state.usage.report()

"""Probes and metrics: `/`, `/health`, `/live`, `/ready`, `/metrics`. Status codes carry the
meaning (Kubernetes reads nothing else); bodies are for humans."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from nanoserve.server.api.openai import runtime_of
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter()


@router.get("/")
async def root(request: Request) -> dict:
    """What this server is and where its API starts (open, for humans and smoke checks)."""
    message = (
        "nanoserve: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, "
        "POST /generate, POST /tokenize; docs at /docs"
    )
    if not request.app.state.settings.no_playground:
        message += "; try it in a browser at /playground"
    return {"status": "ok", "message": message}


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 once the model is loaded and the engine alive; 503 while loading or once it died."""
    runtime = runtime_of(request)
    if runtime.phase == "dead" or (runtime.engine is not None and runtime.engine.dead):
        return JSONResponse(
            {"status": "unhealthy", "model_loaded": False, "reason": "engine stopped"}, 503
        )
    if runtime.engine is None:
        return JSONResponse(
            {"status": "unhealthy", "model_loaded": False, "reason": "model loading"}, 503
        )
    return JSONResponse({"status": "healthy", "model_loaded": True})


@router.get("/live")
async def live() -> dict:
    """Liveness: 200 while the process answers at all (cheap; restart me if not)."""
    return {"status": "alive"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 when requests can be served; 503 while loading, draining or dead."""
    runtime = runtime_of(request)
    if runtime.serving:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": runtime.phase}, 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus exposition: nanoserve_* and vLLM's vllm:* families (authenticated unless
    --metrics-open)."""
    registry = runtime_of(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

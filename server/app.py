"""`create_app(settings, load_engine)`: the FastAPI app, with nothing done at import time."""

from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from nanoserve import __version__

from . import errors, health, legacy, routes
from .generation import Engine
from .metrics import Metrics
from .middleware import RequestContext
from .runtime import Runtime
from .settings import Settings


def create_app(
    settings: Settings,
    load_engine: Callable[[], Awaitable[Engine]],
    *,
    registry: CollectorRegistry | None = None,
    on_fatal: Callable[[int], None] | None = None,
) -> FastAPI:
    """Build the app. `load_engine` is awaited in the background once the app starts, so probes
    answer while the model loads; `on_fatal(code)` is called when the engine can't go on."""
    metrics = Metrics.for_registry(registry)
    runtime = Runtime(load_engine, metrics, on_fatal)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="nanoserve", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.runtime = runtime
    errors.install(app)
    for module in (routes, legacy, health):
        app.include_router(module.router)
    app.add_middleware(RequestContext, metrics=metrics, max_body=settings.max_request_bytes)
    return app

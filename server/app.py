"""`create_app(settings, load_engine)`: the FastAPI app, with nothing done at import time."""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from nanoserve.server import errors
from nanoserve.server.api import generate, openai, playground, probes, sagemaker, tokenize
from nanoserve.server.engine.interface import Engine
from nanoserve.server.models.live import LiveModel, Source
from nanoserve.server.observability.metrics import Metrics
from nanoserve.server.runtime import Runtime
from nanoserve.server.security.accounting import Accounting
from nanoserve.server.security.auth import Authenticator
from nanoserve.server.security.guard import Guard
from nanoserve.server.security.lockout import Lockout
from nanoserve.server.security.ratelimit import RateLimiter
from nanoserve.server.serving.chat_template import ChatTemplate
from nanoserve.server.serving.service import CompletionService
from nanoserve.server.settings import Settings
from nanoserve.server.transport.request_context import RequestContext
from prometheus_client import CollectorRegistry

from nanoserve import __version__

log = logging.getLogger("nanoserve.app")


def _reload_on_sighup(auth: Authenticator) -> None:
    # Revoke or add keys without a restart: edit the key file, `kill -HUP <pid>`.
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not main thread
        loop.add_signal_handler(signal.SIGHUP, auth.reload)


def create_app(
    settings: Settings,
    load_engine: Source | Callable[[], Awaitable[Engine]],
    *,
    registry: CollectorRegistry | None = None,
    on_fatal: Callable[[int], None] | None = None,
) -> FastAPI:
    """Build the app. `load_engine` (a Source, or just the call that starts the engine) is
    awaited in the background once the app starts, so probes answer while the model loads;
    `on_fatal(code)` is called when the engine can't go on."""
    metrics = Metrics.for_registry(registry)
    metrics.ttft_alert.set(settings.ttft_alert_seconds)  # the alert rule reads it from here
    auth = Authenticator(settings)
    limiter = RateLimiter(settings, on_storage_error=metrics.limiter_errors.inc)
    accounting = Accounting(metrics, settings.usage_max_callers)

    chat_template = ChatTemplate.load(settings.chat_template)  # a bad file fails here, at once

    def make_service(engine: Engine, version: str | None) -> CompletionService:
        chat_template.check_vocabulary(engine.info.char_vocab)  # StartupError: one log line
        return CompletionService(
            engine, settings, metrics, limiter, accounting, chat_template, version
        )

    source = load_engine if isinstance(load_engine, Source) else Source(first=load_engine)
    model = LiveModel(source, make_service, metrics, keep=settings.keep_versions)
    runtime = Runtime(
        model,
        metrics,
        on_fatal,
        playground_url=playground.url(settings),
        watch_settle=settings.watch_settle,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        _reload_on_sighup(auth)
        runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="nanoserve", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.auth = auth  # SIGHUP reloads its key file
    app.state.accounting = accounting
    errors.install(app)
    for module in (openai, generate, tokenize, sagemaker, probes):
        app.include_router(module.router)
    open_paths = sagemaker.SAGEMAKER_PATHS if settings.sagemaker else frozenset()
    if not settings.no_playground:
        app.include_router(playground.router())
        open_paths |= playground.PLAYGROUND_PATHS
    # Starlette wraps in reverse order: RequestContext (ids, size cap, access log) is outermost,
    # so even a 401 carries an x-request-id and is logged.
    app.add_middleware(
        Guard,
        auth=auth,
        limiter=limiter,
        accounting=accounting,
        lockout=Lockout(settings.max_auth_failures),
        metrics_open=settings.metrics_open,
        also_open=open_paths,
    )
    app.add_middleware(
        RequestContext,
        metrics=metrics,
        max_body=settings.max_request_bytes,
        max_headers=settings.max_header_count,
        max_header_bytes=settings.max_header_bytes,
    )
    return app

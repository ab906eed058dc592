"""The server's life: load the model in the background, watch the engine, and stop when it dies;
with --watch, follow the checkpoint too (models/watch.py, models/live.py).

Kubernetes reads only status codes from its probes, so the phases are explicit: `starting` (the
engine loads; /live answers, /ready is 503), `ready`, `draining` (SIGTERM), `dead` (engine gone:
503 everywhere, and the process exits non-zero so a supervisor restarts it). vLLM's own server
runs the same kind of watchdog: a dead engine core never comes back by itself.
"""

import asyncio
import gc
import logging
import time
from collections.abc import Callable

from nanoserve.server.engine.interface import Engine, StartupError
from nanoserve.server.errors import unavailable
from nanoserve.server.models.live import LiveModel
from nanoserve.server.models.watch import follow
from nanoserve.server.observability.metrics import Metrics
from nanoserve.server.serving.service import CompletionService

from nanoserve import __version__

log = logging.getLogger("nanoserve.runtime")

WATCH_SECONDS = 1.0  # how often the engine's pulse is taken
# A drain ends the requests still open this long before the graceful-shutdown timeout, so that
# they finish the documented way and their answers get out before uvicorn stops waiting.
DRAIN_MARGIN_SECONDS = 2.0
DEAD_GRACE_SECONDS = 2.0  # time open streams get to send their error event before exit


def _freeze_startup_heap() -> None:
    """Move every object alive now (torch, vLLM, the model's config: ~650 K of them) out of the
    garbage collector's sight. Otherwise each full collection walks them all: 0.6 s with the
    event loop stopped on a quiet 2-core machine, over 1 s on a busy one, long enough for
    requests to miss a short deadline. vLLM's own server does the same once its engine is up."""
    gc.collect()
    gc.freeze()


class Runtime:
    """The engine's phase, and the completion service once there is an engine to serve."""

    def __init__(
        self,
        model: LiveModel,
        metrics: Metrics,
        on_fatal: Callable[[int], None] | None = None,
        playground_url: str | None = None,
        watch_settle: float = 2.0,
    ):
        self.model = model
        self.metrics = metrics
        self.on_fatal = on_fatal or (lambda code: None)
        self.playground_url = playground_url  # the ready line names it: where to look first
        self.watch_settle = watch_settle
        self.phase = "starting"
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        metrics.ready.set_function(lambda: float(self.serving))  # read at each scrape

    @property
    def engine(self) -> Engine | None:
        """The engine serving now (a reload to another architecture replaces it)."""
        return self.model.engine

    @property
    def _service(self) -> CompletionService | None:
        return self.model.service

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    @property
    def serving(self) -> bool:
        """What /ready answers 200 to: ready, and the engine still alive (the watchdog notices
        a death only at its next look)."""
        return self.ready and self.engine is not None and not self.engine.dead

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks.append(asyncio.create_task(self._start_engine()))

    def drain(self, grace: float) -> None:
        """SIGTERM: /ready turns 503 now, and whatever is still open `grace` seconds from now
        (less a margin) is ended by its deadline. Called from a signal handler: the loop is
        only asked to do it."""
        if self.phase == "ready":
            self.phase = "draining"
        if self._service is not None and self._loop is not None:
            at = time.perf_counter() + max(0.0, grace - DRAIN_MARGIN_SECONDS)
            self._loop.call_soon_threadsafe(self._service.cut_off, at)

    async def _start_engine(self) -> None:
        try:
            await self.model.load()
            _freeze_startup_heap()
        except Exception as e:
            # our own one-line errors (unsupported head size...) need no stack trace
            log.error("engine failed to start: %s", e, exc_info=not isinstance(e, StartupError))
            self.phase = "dead"
            self.on_fatal(1)
            return
        self.phase = "ready"
        self.metrics.engine_up.set(1)
        self.metrics.engine_unfinished.set_function(lambda: self.engine.num_unfinished())
        info = self.engine.info
        self.metrics.build.info(
            {
                "version": __version__,
                "engine": info.engine_version,
                "model": info.name,
                "dtype": info.dtype,
                "max_model_len": str(info.max_model_len),
                "device": info.device,
            }
        )
        see = f"; playground: {self.playground_url}" if self.playground_url else ""
        log.info(
            "ready: serving %s (context %d tokens)%s",
            info.name,
            info.max_model_len,
            see,
            extra={
                "model": info.name,
                "max_model_len": info.max_model_len,
                "playground": self.playground_url,
            },
        )
        self._tasks.append(asyncio.create_task(self._watch()))
        if self.model.source.checkpoint is not None:
            follower = follow(self.model.source.checkpoint, self.watch_settle, self._reload)
            self._tasks.append(asyncio.create_task(follower))

    async def _reload(self) -> None:
        await self.model.reload("the checkpoint changed")

    async def _watch(self) -> None:
        assert self.engine is not None
        while not self.engine.dead:
            await asyncio.sleep(WATCH_SECONDS)
        self.phase = "dead"
        self.metrics.engine_up.set(0)
        log.error("engine core died; finishing open streams with an error, then exiting")
        await asyncio.sleep(DEAD_GRACE_SECONDS)
        self.on_fatal(1)

    def service(self) -> CompletionService:
        """The completion service, or a 503 saying why there is none right now."""
        if self.phase == "ready" and self._service is not None:
            return self._service
        reasons = {
            "starting": "The model is still loading; retry shortly.",
            "draining": "This replica is shutting down; retry on another.",
            "dead": "The inference engine stopped; retry on another replica.",
        }
        error = unavailable(reasons.get(self.phase, "Not ready."), retry_after=5)
        if self.phase == "draining":
            # close the connection after this answer: a proxy that keeps reusing its idle
            # keep-alive connections to us would get 503s here until the drain times out
            error.headers["Connection"] = "close"
        raise error

    async def stop(self) -> None:
        if self.phase != "dead":
            self.phase = "draining"
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.model.stop()
        if self.engine is not None:
            self.engine.shutdown()
            # The startup heap goes back to the collector, so that the interpreter's last
            # collection frees it: frozen, Triton's objects outlive the interpreter, and its
            # binding library (nanobind) reports each as a leak on stderr, past our last line.
            gc.unfreeze()
        self.metrics.engine_up.set(0)

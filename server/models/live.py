"""A served model that follows its source: the engine and service now, the versions kept, and
how a new version replaces the current one without failing a request.

A reload converts what the source holds now (a nanoGPT checkpoint: in a separate process, into
a new content-addressed directory, verified against nanoGPT's own forward pass), then:

- same architecture (models/version.architecture): the weights are swapped in the running
  engine between jobs (CompletionService.swap): jobs that started finish on the old version,
  new ones wait for the swap (a few hundredths of a second), then run on the new one;
- a different architecture: a new engine starts beside the old one, which keeps serving until
  the new one is ready; then new jobs go to the new one, and the old one is shut down once its
  last job ended.

A reload that fails anywhere leaves the current version serving, and nothing of the attempt
behind: its status and last error say why, and the next change is tried again.
"""

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from nanoserve.server.engine.interface import Engine
from nanoserve.server.models.version import Version, architecture, describe
from nanoserve.server.observability.metrics import Metrics
from nanoserve.server.serving.service import CompletionService

log = logging.getLogger("nanoserve.models")

RETIRE_POLL_SECONDS = 0.2  # how often a replaced engine is checked for its last job


@dataclass(frozen=True)
class Source:
    """Where a model's weights come from. `first()` starts the engine the server begins with;
    with `directory` (what `first` loads), `resolve` (blocking: the converted directory the
    source holds now) and `start` (an engine on a directory), the model can also reload.
    `checkpoint`: the nanoGPT file that --watch follows, if the source is one."""

    first: Callable[[], Awaitable[Engine]]
    directory: Path | None = None
    resolve: Callable[[], Path] | None = None
    start: Callable[[Path], Awaitable[Engine]] | None = None
    checkpoint: Path | None = None
    owns: Callable[[Path], bool] = lambda path: False  # may a replaced version's dir go?
    warm: Callable[[], None] | None = None  # get reloads ready, once the first engine is up
    close: Callable[[], None] | None = None  # undo `warm`

    @property
    def reloadable(self) -> bool:
        return None not in (self.directory, self.resolve, self.start)


class ReloadFailed(Exception):
    """A new version could not be served; the current one goes on. The message says why."""


class LiveModel:
    """One served model. `service` is None until the first engine is up."""

    def __init__(
        self,
        source: Source,
        make_service: Callable[[Engine, str | None], CompletionService],
        metrics: Metrics,
        keep: int = 3,
    ):
        self.source = source
        self._make_service = make_service
        self.metrics = metrics
        self.keep = keep
        self.service: CompletionService | None = None
        self.status = "loading"
        self.last_error: str | None = None
        self.kept: list[Version] = []  # oldest first; the current one is the last
        self._lock = asyncio.Lock()  # one reload at a time
        self._retiring: set[asyncio.Task] = set()

    @property
    def name(self) -> str:
        return self.service.engine.info.name if self.service else ""

    @property
    def current(self) -> Version | None:
        return self.kept[-1] if self.kept else None

    @property
    def engine(self) -> Engine | None:
        return self.service.engine if self.service else None

    async def load(self) -> None:
        """Start the first engine (exceptions propagate: the server can't start)."""
        engine = await self.source.first()
        directory = self.source.directory
        # in a thread: a directory nanoserve did not convert is named by hashing its weights
        version = await asyncio.to_thread(describe, directory) if directory else None
        self.service = self._new_service(engine, version)
        if version is not None:
            self._keep(version)
        self.status = "ready"
        if self.source.warm is not None:
            self.source.warm()

    async def reload(self, why: str) -> Version:
        """Serve what the source holds now. Raises ReloadFailed (the current version serving
        on) with the reason, which is also the model's status and a log line."""
        if not self.source.reloadable or self.current is None:
            raise ReloadFailed(f"{self.name} is not reloadable: it was not started from a path")
        async with self._lock:
            self.status = "reloading"
            started = time.perf_counter()
            try:
                directory = await asyncio.to_thread(self.source.resolve)
                version = await asyncio.to_thread(describe, directory)
                how = "unchanged"
                if version.id != self.current.id:
                    how = await self._switch(version)
            except Exception as e:
                return self._failed(e, why)
            seconds = time.perf_counter() - started
            self.status, self.last_error = "ready", None
            self.metrics.reloads.labels(self.name, how).inc()
            log.info(
                "model %s: serving version %s (%s, %s, %.2f s)",
                self.name,
                version.id,
                why,
                how,
                seconds,
                extra={"model": self.name, "version": version.id, "how": how, "seconds": seconds},
            )
            return version

    def _failed(self, e: Exception, why: str):
        reason = " ".join(str(e).split()) or type(e).__name__
        self.status, self.last_error = f"failed: {reason}", reason
        self.metrics.reloads.labels(self.name, "failed").inc()
        log.error(
            "model %s: reload (%s) failed, still serving %s: %s",
            self.name,
            why,
            self.current.id if self.current else None,
            reason,
            extra={"model": self.name, "reason": reason},
        )
        raise ReloadFailed(reason) from e

    async def _switch(self, version: Version) -> str:
        """Serve `version` instead of the current one; how it was done."""
        service = self.service
        assert service is not None and self.current is not None
        if architecture(version.directory) == architecture(self.current.directory):
            await service.swap(lambda: service.engine.swap_weights(version.directory), version.id)
            self._keep(version)
            return "in_place"
        engine = await self.source.start(version.directory)
        try:
            new = self._new_service(engine, version)
        except BaseException:
            engine.shutdown()  # nothing of a failed attempt stays in memory
            raise
        self.service = new
        self._keep(version)
        task = asyncio.create_task(self._retire(service))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return "new_engine"

    def _new_service(self, engine: Engine, version: Version | None) -> CompletionService:
        return self._make_service(engine, version.id if version else None)

    async def _retire(self, old: CompletionService) -> None:
        """Shut a replaced engine down once its last job ended."""
        while old.jobs:
            await asyncio.sleep(RETIRE_POLL_SECONDS)
        await asyncio.to_thread(old.engine.shutdown)
        log.info("model %s: the replaced engine stopped", self.name)

    def _keep(self, version: Version) -> None:
        """Make `version` the current one; forget (and delete, if ours) the oldest past `keep`."""
        if self.current is not None:
            with contextlib.suppress(KeyError):  # nanoserve_model_info: the served version only
                self.metrics.model_info.remove(self.name, self.current.id)
        self.metrics.model_info.labels(self.name, version.id).set(1)
        self.kept = [v for v in self.kept if v.id != version.id] + [version]
        while len(self.kept) > self.keep:
            gone = self.kept.pop(0)
            if self.source.owns(gone.directory) and gone.directory != version.directory:
                shutil.rmtree(gone.directory, ignore_errors=True)

    async def stop(self) -> None:
        if self.source.close is not None:
            self.source.close()
        for task in self._retiring:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._retiring, return_exceptions=True)

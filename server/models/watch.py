"""`--watch`: notice when a training run has written a new checkpoint, and when it is complete.

nanoGPT's train.py saves `out/ckpt.pt` with `torch.save` over the old file, in place and not
atomically: a reader can see half a file. A change is taken as complete once the file's size and
modification time have stayed the same for `settle` seconds; the reload then converts it, and a
file that does not load after all (still being written, or truncated) fails that reload only:
the next change is tried again.
"""

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from nanoserve.server.models.live import ReloadFailed

log = logging.getLogger("nanoserve.models")


def stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of `path`, or None while it does not exist (between a delete and a
    write)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


@dataclass
class Settle:
    """Decides, from successive looks at a file, when a new version of it is complete."""

    settle: float  # seconds without a change
    tried: tuple[int, int] | None  # the stamp last handed out (or served at the start)
    seen: tuple[int, int] | None = None
    since: float = field(default=0.0)

    def look(self, now: float, current: tuple[int, int] | None) -> bool:
        """True once per new version: `current` differs from what was last tried, and has not
        changed for `settle` seconds."""
        if current != self.seen:
            self.seen, self.since = current, now
            return False
        if current is None or current == self.tried or now - self.since < self.settle:
            return False
        self.tried = current
        return True


async def follow(
    path: Path,
    settle: float,
    reload: Callable[[], Awaitable[object]],
    poll: float | None = None,
) -> None:
    """Call `reload()` for each complete new version of `path`, until cancelled. Its failures
    are its own to report (ReloadFailed); this loop goes on watching."""
    state = Settle(settle, tried=stamp(path))
    poll = poll if poll is not None else min(0.25, max(settle / 4, 0.05))
    log.info("watching %s for new checkpoints", path, extra={"path": str(path)})
    while True:
        await asyncio.sleep(poll)
        current = await asyncio.to_thread(stamp, path)
        if state.look(time.monotonic(), current):
            try:
                await reload()
            except ReloadFailed:  # logged and shown by the model; the next change is tried
                pass
            except Exception:  # a bug: said once, and the watch goes on
                log.exception("reloading %s failed unexpectedly", path)

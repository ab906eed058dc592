"""A deadline over the waits of one loop, with one timer for the whole loop.

The service waits on the engine once per token, and each wait is bounded (the request's
deadline; a stream's keep-alive ping). `asyncio.timeout` per wait puts a timer on the event
loop's heap and takes it off again every token: with an instant engine that was a fifth of a
JSON request's CPU in nanoserve (cProfile of bench/frontend.py). An Alarm keeps one timer for
the loop's life instead, and is entered around each wait like `asyncio.timeout`:

    alarm = Alarm(loop.time() + seconds)
    while ...:
        async with alarm:          # TimeoutError if the deadline passes during this wait
            item = await source()
        ...                        # not timed: our own work, a slow client
    alarm.close()

As with `asyncio.timeout`, only the waits are timed; a deadline that passed between them makes
the next wait raise at once. Moving the deadline later (`later`, per token for the ping) costs an
assignment: a timer that rings early sets itself again. Moving it earlier (`reschedule`, a drain)
sets a new timer.
"""

import asyncio
import math


class Alarm:
    def __init__(self, when: float) -> None:
        """`when`: the deadline on the event loop's clock (`loop.time()`), or math.inf."""
        self.loop = asyncio.get_running_loop()
        self.task: asyncio.Task | None = None  # the waiting one (a stream's changes after its
        # first event: respond() awaits that in a task of its own)
        self.when = when
        self._handle: asyncio.TimerHandle | None = None
        self._waiting = False  # inside `async with`: a ring cancels the task
        self._rang = False  # this wait was cancelled by us (not by anyone else)
        self._cancelling = 0
        self._arm()

    def _arm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None if math.isinf(self.when) else self.loop.call_at(self.when, self._ring)

    def later(self, when: float) -> None:
        """Move the deadline later; no timer is touched now."""
        self.when = when

    def reschedule(self, when: float) -> None:
        """Move the deadline anywhere (earlier: the timer is set again)."""
        earlier = when < self.when
        self.when = when
        if earlier or self._handle is None:
            self._arm()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _ring(self) -> None:
        self._handle = None
        if self.loop.time() < self.when:  # moved later since: wait until then
            self._arm()
        elif self._waiting and self.task is not None:
            self._rang = True
            self.task.cancel()
        # else: between waits; the next one raises at once (and no timer is needed until then)

    async def __aenter__(self) -> "Alarm":
        if self.loop.time() >= self.when:
            raise TimeoutError
        if self._handle is None:
            self._arm()  # it rang between waits, and the deadline has moved later since
        self.task = asyncio.current_task()
        assert self.task is not None, "Alarm needs a task"
        self._cancelling = self.task.cancelling()
        self._waiting = True
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool | None:
        self._waiting = False
        if self._rang:
            self._rang = False
            # our cancel, not someone else's (a client that left cancels the task too)
            assert self.task is not None
            if self.task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
        return None

"""Per-caller requests/minute, tokens/minute and concurrency, counted with the `limits` library.

Fixed one-minute windows in `memory://` (this process) or `redis://` (every replica shares one
budget). Tokens are reserved at admission (prompt + max_tokens x n) and the unused part is given
back when the request ends, so a caller is charged what it really used.
"""

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.util import WindowStats
from nanoserve.server.errors import APIError, unavailable
from nanoserve.server.security.callers import Caller, Limits
from nanoserve.server.settings import Settings

log = logging.getLogger("nanoserve.ratelimit")

CONCURRENCY_TTL = 600  # s; bounds how long a crashed replica's in-flight count can linger
RELEASE_RETRY_FIRST = 0.2  # s; first wait before retrying a release the storage refused
RELEASE_RETRY_FOR = 120.0  # s; a Redis outage longer than this leaves the slot to the TTL


def _slot_key(caller_id: str) -> str:
    return f"nanoserve/concurrency/{caller_id}"


def _storage(uri: str):
    if uri.startswith(("redis://", "rediss://")):
        return storage_from_string("async+" + uri, implementation="redispy")
    return storage_from_string("async+" + uri)


def _reset_header(seconds: float) -> str:
    return f"{max(math.ceil(seconds), 1)}s"  # OpenAI's x-ratelimit-reset-* style ("6s")


def _window_headers(headers: dict[str, str], kind: str, limit: int, stats) -> float:
    """Set OpenAI's x-ratelimit-{limit,remaining,reset}-`kind` from a window's stats; returns
    the seconds until that window resets."""
    reset_in = stats.reset_time - time.time()
    headers[f"x-ratelimit-limit-{kind}"] = str(limit)
    headers[f"x-ratelimit-remaining-{kind}"] = str(stats.remaining)
    headers[f"x-ratelimit-reset-{kind}"] = _reset_header(reset_in)
    return reset_in


class RateLimited(APIError):
    """429: the caller's own quota (another replica won't help; waiting will)."""

    def __init__(self, kind: str, what: str, retry_after: float, headers: dict[str, str]):
        # kind: "rpm" | "tpm" | "concurrency", the limit that was reached
        wait = max(math.ceil(retry_after), 1)
        super().__init__(
            f"Rate limit reached for {what}; retry in {wait} s.",
            status=429,
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={**headers, "Retry-After": str(wait), "retry-after-ms": str(wait * 1000)},
            reason=f"rate_limit_{kind}",
        )


@dataclass
class Ticket:
    """What an admitted request holds: headers to send, and what to give back at the end."""

    caller: Caller
    limits: Limits
    headers: dict[str, str] = field(default_factory=dict)
    holds_slot: bool = False
    reserved_tokens: int = 0
    window_reset: float = 0.0  # the tokens window the reservation went into


class StorageDown(Exception):
    pass


class RateLimiter:
    def __init__(self, settings: Settings, on_storage_error=None):
        self.defaults = Limits(settings.rpm, settings.tpm, settings.concurrency)
        self.storage = _storage(settings.ratelimit_storage)
        self.fail_open = settings.ratelimit_fail_open
        self.window_seconds = settings.ratelimit_window
        self.on_storage_error = on_storage_error or (lambda: None)
        self._retries: set[asyncio.Task] = set()

    def _item(self, amount: int) -> RateLimitItemPerSecond:
        return RateLimitItemPerSecond(amount, self.window_seconds)

    async def _guard(self, op):
        try:
            return await op
        except self.storage.base_exceptions as e:
            self.on_storage_error()
            log.error(
                "rate-limit storage unreachable (%s); failing %s",
                e,
                "open" if self.fail_open else "closed",
            )
            raise StorageDown from e

    def _down(self) -> APIError:
        return unavailable(
            "Rate limiting is unavailable; retry shortly.", 5, reason="limiter_unavailable"
        )

    async def _take(self, item: RateLimitItemPerSecond, kind: str, who: str, cost: int):
        """Take `cost` from a window in one atomic step, or nothing: (taken, window stats).

        The increment is the check (INCR returns the new count, in Redis and in memory alike),
        so concurrent requests on any number of replicas can't all see room that only one of
        them fits in; an increment that went over is taken back at once. The count it returns
        is also what remains: only the reset time is asked for (two round trips to Redis, not
        the three of `hit` and `get_window_stats`)."""
        key, expiry = item.key_for(kind, who), item.get_expiry()
        count = await self._guard(self.storage.incr(key, expiry, cost))
        taken = count <= item.amount
        if not taken:
            count = await self._guard(self.storage.incr(key, expiry, -cost))
        reset = await self._guard(self.storage.get_expiry(key))
        return taken, WindowStats(reset, max(0, item.amount - count))

    async def admit(self, caller: Caller) -> Ticket:
        """Count one request against the caller's rpm and concurrency, or raise a 429."""
        limits = caller.limits.over(self.defaults)
        ticket = Ticket(caller, limits)
        try:
            await self._requests(ticket)
            await self._slot(ticket)
        except StorageDown:
            if not self.fail_open:
                raise self._down() from None
        return ticket

    async def _requests(self, t: Ticket) -> None:
        if t.limits.rpm is None:
            return
        taken, stats = await self._take(self._item(t.limits.rpm), "rpm", t.caller.id, 1)
        reset_in = _window_headers(t.headers, "requests", t.limits.rpm, stats)
        if not taken:
            raise RateLimited("rpm", "requests per minute", reset_in, t.headers)

    async def _slot(self, t: Ticket) -> None:
        if t.limits.concurrency is None:
            return
        key = _slot_key(t.caller.id)
        # increment, then look: INCR is atomic, so two replicas can't both see the last slot
        # free (a read-then-write could); over the limit, take it back
        n = await self._guard(self.storage.incr(key, CONCURRENCY_TTL, 1))
        if n > t.limits.concurrency:
            await self._guard(self.storage.incr(key, CONCURRENCY_TTL, -1))
            raise RateLimited(
                "concurrency", f"concurrent requests ({t.limits.concurrency})", 1, t.headers
            )
        t.holds_slot = True

    async def reserve_tokens(self, t: Ticket, tokens: int) -> None:
        """Reserve `tokens` of the caller's tokens/minute in one atomic step, or raise a 429."""
        if t.limits.tpm is None:
            return
        if tokens > t.limits.tpm:  # no wait would ever admit it: a 400, not a 429
            raise APIError(
                f"This request needs {tokens} tokens (prompt + max_tokens x n), more than your "
                f"limit of {t.limits.tpm} per minute; lower max_tokens or n.",
                param="max_tokens",
                code="tokens_over_limit",
            )
        try:
            taken, stats = await self._take(self._item(t.limits.tpm), "tpm", t.caller.id, tokens)
        except StorageDown:
            if not self.fail_open:
                raise self._down() from None
            return
        # the guard puts the ticket's headers on every response, this 429 included: the
        # error itself carries only Retry-After, or each x-ratelimit header would come twice
        reset_in = _window_headers(t.headers, "tokens", t.limits.tpm, stats)
        if not taken:
            raise RateLimited("tpm", "tokens per minute", reset_in, {})
        t.reserved_tokens, t.window_reset = tokens, stats.reset_time

    async def release(self, t: Ticket) -> None:
        """The HTTP request ended: free its concurrency slot. If the storage is unreachable the
        release is retried in the background (a Redis blip must not hold a slot — and answer
        the caller 429 — until the key's TTL)."""
        if not t.holds_slot:
            return
        t.holds_slot = False
        key = _slot_key(t.caller.id)
        try:
            await self._free_slot(key)
        except self.storage.base_exceptions as e:
            self.on_storage_error()
            log.error("rate-limit storage unreachable on release (%s); retrying", e)
            task = asyncio.create_task(self._free_slot_later(key))
            self._retries.add(task)  # held, so the task is not garbage-collected mid-retry
            task.add_done_callback(self._retries.discard)

    async def _free_slot(self, key: str) -> None:
        if await self.storage.incr(key, CONCURRENCY_TTL, -1) < 0:  # the key had expired
            await self.storage.clear(key)

    async def _free_slot_later(self, key: str) -> None:
        delay = RELEASE_RETRY_FIRST
        deadline = time.monotonic() + RELEASE_RETRY_FOR
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            try:
                await self._free_slot(key)
                log.info("rate-limit storage back: released a concurrency slot of %s", key)
                return
            except self.storage.base_exceptions:
                delay = min(delay * 2, 5.0)
        log.error("gave up releasing %s: it expires with its TTL (%d s)", key, CONCURRENCY_TTL)

    async def refund_tokens(self, t: Ticket, used_tokens: int) -> None:
        """The job ended having used `used_tokens`: give back the rest of its reservation."""
        unused = t.reserved_tokens - used_tokens
        t.reserved_tokens = min(t.reserved_tokens, used_tokens)
        if not t.limits.tpm or unused <= 0:
            return
        try:
            await self._refund(t, unused)
        except self.storage.base_exceptions as e:
            self.on_storage_error()
            log.error("rate-limit storage unreachable on refund: %s", e)

    async def _refund(self, t: Ticket, unused: int) -> None:
        item = self._item(t.limits.tpm)
        key = item.key_for("tpm", t.caller.id)
        if abs(await self.storage.get_expiry(key) - t.window_reset) > 1:
            return  # that window is over; giving back into a new one would mint tokens
        await self.storage.incr(key, item.get_expiry(), -unused)

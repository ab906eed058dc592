"""Per-caller requests/minute, tokens/minute and concurrency, counted with the `limits` library.

Fixed one-minute windows in `memory://` (this process) or `redis://` (every replica shares one
budget). Tokens are reserved at admission (prompt + max_tokens x n) and the unused part is given
back when the request ends, so a caller is charged what it really used.
"""

import logging
import math
import time
from dataclasses import dataclass, field

from limits import RateLimitItemPerSecond
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

from ..errors import APIError, unavailable
from ..settings import Settings
from .callers import Caller, Limits

log = logging.getLogger("nanoserve.ratelimit")

CONCURRENCY_TTL = 600  # s; bounds how long a crashed replica's in-flight count can linger


def _storage(uri: str):
    if uri.startswith(("redis://", "rediss://")):
        return storage_from_string("async+" + uri, implementation="redispy")
    return storage_from_string("async+" + uri)


def _reset_header(seconds: float) -> str:
    return f"{max(math.ceil(seconds), 1)}s"  # OpenAI's x-ratelimit-reset-* style ("6s")


class RateLimited(APIError):
    """429: the caller's own quota (another replica won't help; waiting will)."""

    def __init__(self, reason: str, what: str, retry_after: float, headers: dict[str, str]):
        wait = max(math.ceil(retry_after), 1)
        super().__init__(
            f"Rate limit reached for {what}; retry in {wait} s.",
            status=429,
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={**headers, "Retry-After": str(wait), "retry-after-ms": str(wait * 1000)},
        )
        self.reason = reason  # "requests" | "tokens" | "concurrency": the usage counter label


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


def rejection_reason(e: APIError) -> str:
    """The usage counter label for a refused request."""
    if isinstance(e, RateLimited):
        return e.reason
    return "limiter_unavailable" if e.status == 503 else "invalid"


class RateLimiter:
    def __init__(self, settings: Settings, on_storage_error=None):
        self.defaults = Limits(settings.rpm, settings.tpm, settings.concurrency)
        self.storage = _storage(settings.ratelimit_storage)
        self.window = FixedWindowRateLimiter(self.storage)
        self.fail_open = settings.ratelimit_fail_open
        self.window_seconds = settings.ratelimit_window
        self.on_storage_error = on_storage_error or (lambda: None)

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
        return unavailable("Rate limiting is unavailable; retry shortly.", retry_after=5)

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
        item = self._item(t.limits.rpm)
        allowed = await self._guard(self.window.hit(item, "rpm", t.caller.id))
        stats = await self._guard(self.window.get_window_stats(item, "rpm", t.caller.id))
        reset_in = stats.reset_time - time.time()
        t.headers.update(
            {
                "x-ratelimit-limit-requests": str(t.limits.rpm),
                "x-ratelimit-remaining-requests": str(stats.remaining),
                "x-ratelimit-reset-requests": _reset_header(reset_in),
            }
        )
        if not allowed:
            raise RateLimited("requests", "requests per minute", reset_in, t.headers)

    async def _slot(self, t: Ticket) -> None:
        if t.limits.concurrency is None:
            return
        key = f"nanoserve/concurrency/{t.caller.id}"
        n = await self._guard(self.storage.incr(key, CONCURRENCY_TTL, 1))
        if n > t.limits.concurrency:
            await self._guard(self.storage.incr(key, CONCURRENCY_TTL, -1))
            raise RateLimited(
                "concurrency", f"concurrent requests ({t.limits.concurrency})", 1, t.headers
            )
        t.holds_slot = True

    async def reserve_tokens(self, t: Ticket, tokens: int) -> None:
        """Reserve `tokens` of the caller's tokens/minute, or raise a 429."""
        if t.limits.tpm is None:
            return
        item = self._item(t.limits.tpm)
        try:
            if tokens > t.limits.tpm:
                raise APIError(
                    f"This request needs {tokens} tokens (prompt + max_tokens x n), "
                    f"more than your limit of {t.limits.tpm} per minute; lower "
                    "max_tokens or n.",
                    param="max_tokens",
                    code="tokens_over_limit",
                )
            if await self._guard(self.window.test(item, "tpm", t.caller.id, cost=tokens)):
                await self._guard(self.window.hit(item, "tpm", t.caller.id, cost=tokens))
                t.reserved_tokens = tokens
            stats = await self._guard(self.window.get_window_stats(item, "tpm", t.caller.id))
        except StorageDown:
            if not self.fail_open:
                raise self._down() from None
            return
        t.window_reset = stats.reset_time
        t.headers.update(
            {
                "x-ratelimit-limit-tokens": str(t.limits.tpm),
                "x-ratelimit-remaining-tokens": str(stats.remaining),
                "x-ratelimit-reset-tokens": _reset_header(stats.reset_time - time.time()),
            }
        )
        if not t.reserved_tokens:
            raise RateLimited(
                "tokens", "tokens per minute", stats.reset_time - time.time(), t.headers
            )

    async def release(self, t: Ticket) -> None:
        """The HTTP request ended: free its concurrency slot."""
        if not t.holds_slot:
            return
        t.holds_slot = False
        key = f"nanoserve/concurrency/{t.caller.id}"
        try:
            if await self.storage.incr(key, CONCURRENCY_TTL, -1) < 0:  # key had expired
                await self.storage.clear(key)
        except self.storage.base_exceptions as e:
            self.on_storage_error()
            log.error("rate-limit storage unreachable on release: %s", e)

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
        stats = await self.window.get_window_stats(item, "tpm", t.caller.id)
        if abs(stats.reset_time - t.window_reset) > 1:
            return  # that window is over; giving back into a new one would mint tokens
        await self.storage.incr(item.key_for("tpm", t.caller.id), item.get_expiry(), -unused)

"""The security layer, as pure-ASGI middleware in front of every route.

Deny by default: a request reaches a route only if its raw path is one of the open probe paths
or it carries valid credentials. The check runs on `scope["path"]` before routing, so a new
route is protected without anyone remembering to, and Host-header or path tricks meet the same
check (CVE-2026-48746 reached vLLM's routes past a path check through the Host header).

The guard admits (requests/minute, concurrency) and frees the concurrency slot when the response
is done; it hands routes the caller's `Ticket` in `scope["state"]` and reads nothing back: the
completion service charges tokens and settles them.
"""

import logging

from ..errors import APIError
from .accounting import Accounting
from .auth import Authenticator
from .ratelimit import RateLimiter, Ticket, rejection_reason

log = logging.getLogger("nanoserve.guard")

OPEN_PATHS = frozenset({"/", "/health", "/live", "/ready"})
# Authenticated but not rate-limited: a scraper must see the outage that limits would hide.
UNMETERED_PATHS = frozenset({"/metrics"})

UNAUTHORIZED = APIError(
    "Missing or invalid credentials: send 'Authorization: Bearer <API key or JWT>'.",
    status=401,
    code="invalid_api_key",
    headers={"WWW-Authenticate": "Bearer"},
)


class Guard:
    def __init__(
        self,
        app,
        auth: Authenticator,
        limiter: RateLimiter,
        accounting: Accounting,
        metrics_open: bool,
    ):
        self.app = app
        self.auth = auth
        self.limiter = limiter
        self.accounting = accounting
        self.open_paths = OPEN_PATHS | ({"/metrics"} if metrics_open else set())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        caller = self.auth.authenticate(scope["headers"])
        if caller is None:
            self.accounting.rejected("unauthenticated", "auth")
            return await UNAUTHORIZED.send(send, scope["path"])
        state = scope.setdefault("state", {})
        state["caller"] = caller.id
        if scope["path"] in UNMETERED_PATHS:
            return await self.app(scope, receive, send)
        try:
            ticket = await self.limiter.admit(caller)
        except APIError as e:
            self.accounting.rejected(caller.id, rejection_reason(e))
            return await e.send(send, scope["path"])
        state["ticket"] = ticket  # the route hands it to the completion service
        self.accounting.admitted(caller.id)
        try:
            await self.app(scope, receive, _with_headers(send, ticket))
        finally:
            await self.limiter.release(ticket)


def _with_headers(send, ticket: Ticket):
    async def wrapped(message):
        if message["type"] == "http.response.start" and ticket.headers:
            message["headers"] = [
                *message.get("headers", []),
                *((k.encode(), v.encode()) for k, v in ticket.headers.items()),
            ]
        await send(message)

    return wrapped

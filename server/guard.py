"""The security layer, as pure-ASGI middleware in front of every route.

Deny by default: a request reaches a route only if its raw path is one of the open probe paths
or it carries valid credentials. The check runs on `scope["path"]` before routing, so a new
route is protected without anyone remembering to, and Host-header or path tricks (REFERENCE §4,
CVE-2026-48746) meet the same check.
"""

import logging

from .auth import Authenticator
from .callers import Caller
from .errors import APIError
from .ratelimit import RateLimiter, Ticket
from .usage import Usage

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
        self, app, auth: Authenticator, limiter: RateLimiter, usage: Usage, metrics_open: bool
    ):
        self.app = app
        self.auth = auth
        self.limiter = limiter
        self.usage = usage
        self.open_paths = OPEN_PATHS | ({"/metrics"} if metrics_open else set())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        caller = self.auth.authenticate(scope["headers"])
        if caller is None:
            self.usage.rejected("unauthenticated", "auth")
            return await UNAUTHORIZED.send(send)
        state = scope.setdefault("state", {})
        state["caller"] = caller.id
        if scope["path"] in UNMETERED_PATHS:
            return await self.app(scope, receive, send)
        try:
            ticket = await self.limiter.admit(caller)
        except APIError as e:
            self.usage.rejected(caller.id, _reason(e))
            return await e.send(send)
        state["ticket"] = ticket
        self.usage.admitted(caller.id)
        try:
            await self.app(scope, receive, _with_headers(send, ticket))
        finally:
            await self._settle(caller, ticket, state.get("job"))

    async def _settle(self, caller: Caller, ticket: Ticket, job) -> None:
        used = None
        if job is not None:
            used = job.prompt_tokens + job.completion_tokens
            self.usage.tokens(caller.id, job.prompt_tokens, job.completion_tokens)
        await self.limiter.release(ticket, used)


def _reason(e: APIError) -> str:
    return getattr(e, "reason", None) or ("limiter_unavailable" if e.status == 503 else "invalid")


def _with_headers(send, ticket: Ticket):
    async def wrapped(message):
        if message["type"] == "http.response.start" and ticket.headers:
            message["headers"] = [
                *message.get("headers", []),
                *((k.encode(), v.encode()) for k, v in ticket.headers.items()),
            ]
        await send(message)

    return wrapped


async def reserve_tokens(request, tokens: int) -> None:
    """Charge a request's worst-case tokens to its caller's tokens/minute (route helper)."""
    ticket: Ticket | None = getattr(request.state, "ticket", None)
    if ticket is None:  # open path (no caller)
        return
    try:
        await request.app.state.limiter.reserve_tokens(ticket, tokens)
    except APIError as e:
        request.app.state.usage.rejected(ticket.caller.id, _reason(e))
        raise

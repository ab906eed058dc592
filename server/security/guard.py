"""The security layer, as pure-ASGI middleware in front of every route.

Deny by default: a request reaches a route only if its raw path is one of the open paths (the
probes, and the ones the app adds: SageMaker's, the playground's static files) or it carries
valid credentials. Failed attempts are counted per client address (lockout.py) and refused with
429 past a limit; valid credentials are checked first and never refused by that count. The check
runs on `scope["path"]` before routing, so a new route is protected without anyone remembering
to, and Host-header or path tricks meet the same check (CVE-2026-48746 reached vLLM's routes past
a path check through the Host header).

The guard admits (requests/minute, concurrency) and frees the concurrency slot when the response
is done; it hands routes the caller's `Ticket` in `scope["state"]` and reads nothing back: the
completion service charges tokens and settles them. A request it refuses gets its access line
and its rejection counted here (the request's `access.Exchange`), with the reason it knows.
"""

import logging
import math

from nanoserve.server.errors import APIError
from nanoserve.server.security.accounting import Accounting
from nanoserve.server.security.auth import Authenticator
from nanoserve.server.security.lockout import Lockout
from nanoserve.server.security.ratelimit import RateLimiter, Ticket

log = logging.getLogger("nanoserve.guard")

OPEN_PATHS = frozenset({"/", "/health", "/live", "/ready"})
# Authenticated but not rate-limited: a scraper must see the outage that limits would hide.
UNMETERED_PATHS = frozenset({"/metrics"})

METRICS_FORBIDDEN = APIError(
    "/metrics names every caller: it needs a key with the `metrics` (or `admin`) scope.",
    status=403,
    type="permission_error",
    code="insufficient_permissions",
    reason="auth",
)

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
        lockout: Lockout,
        metrics_open: bool,
        also_open: frozenset[str] = frozenset(),  # SageMaker's paths, the playground's files
    ):
        self.app = app
        self.auth = auth
        self.limiter = limiter
        self.accounting = accounting
        self.lockout = lockout
        self.open_paths = OPEN_PATHS | also_open | ({"/metrics"} if metrics_open else set())

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # a WebSocket: no route takes one, and none gets past here
            return await _refuse_websocket(receive, send)
        if scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        state = scope["state"]  # RequestContext made it: the request's Exchange, its client
        # Credentials first: valid ones go on whatever others did from the same address (a
        # proxy's, shared by everyone behind it); the lockout refuses only failed attempts.
        caller = self.auth.authenticate(scope["headers"])
        if caller is None:
            address = state["client"]
            if (wait := self.lockout.retry_after(address)) is not None:
                refusal = _locked_out(address, wait)
                return await self._refuse(scope, send, "unauthenticated", refusal)
            self.lockout.failed(address)
            return await self._refuse(scope, send, "unauthenticated", UNAUTHORIZED)
        state["exchange"].caller = caller.id
        if scope["path"] in UNMETERED_PATHS:
            if not caller.reads_metrics:
                return await self._refuse(scope, send, caller.id, METRICS_FORBIDDEN)
            return await self.app(scope, receive, send)
        try:
            ticket = await self.limiter.admit(caller)
        except APIError as e:
            return await self._refuse(scope, send, caller.id, e)
        state["ticket"] = ticket  # the route hands it to the completion service
        self.accounting.admitted(caller.id)
        try:
            await self.app(scope, receive, _with_headers(send, ticket))
        finally:
            await self.limiter.release(ticket)

    async def _refuse(self, scope, send, caller_id: str, e: APIError) -> None:
        """Answer `e`; count it for the caller, and in the request's access line and metrics."""
        self.accounting.rejected(caller_id, e.reason)
        scope["state"]["exchange"].close(e.status, e.reason)
        await e.send(send, scope["path"])


def _with_headers(send, ticket: Ticket):
    async def wrapped(message):
        if message["type"] == "http.response.start" and ticket.headers:
            message["headers"] = [
                *message.get("headers", []),
                *((k.encode(), v.encode()) for k, v in ticket.headers.items()),
            ]
        await send(message)

    return wrapped


def _locked_out(address: str, wait: float) -> APIError:
    seconds = max(math.ceil(wait), 1)
    return APIError(
        f"Too many failed authentications from {address}; check the key and retry in "
        f"{seconds} s (valid credentials are not refused).",
        status=429,
        type="rate_limit_error",
        code="too_many_failed_authentications",
        headers={"Retry-After": str(seconds), "retry-after-ms": str(seconds * 1000)},
        reason="auth",
    )


async def _refuse_websocket(receive, send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 1008})  # policy violation: HTTP 403

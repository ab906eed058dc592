"""Pure-ASGI middleware (no BaseHTTPMiddleware: it buffers streams and costs per chunk).

Every response gets an `x-request-id` (the client's if it is safe, else a fresh one), the body
size is capped before anything reads it, and each request is logged and counted once (its
`access.Exchange`, closed here unless the guard or the completion service closed it first).
The client's address is resolved once, here, for the lockout, the access log and messages.
"""

import ipaddress
import re
import uuid

from nanoserve.server.errors import APIError
from nanoserve.server.observability.access_log import Exchange
from nanoserve.server.observability.logs import REQUEST_ID
from nanoserve.server.observability.metrics import Metrics
from starlette.exceptions import HTTPException

# A client's id is echoed into headers and logs: nothing that could split a header or a log line
SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for k, v in headers:
        if k == b"x-request-id":
            value = v.decode("latin-1")
            if SAFE_ID.fullmatch(value):
                return value
    return uuid.uuid4().hex


def client_address(scope: dict) -> str:
    """The client's IP address in canonical form, or "unknown": never a string the client
    wrote. `scope["client"]` is the TCP peer, or the address a trusted proxy named
    (--forwarded-allow-ips, applied by uvicorn before the app); a proxy that sent something
    that is not an address gets "unknown"."""
    host = (scope.get("client") or ("",))[0] or ""
    try:
        return str(ipaddress.ip_address(host[:64]))  # an IPv6 address with a zone is < 64
    except ValueError:
        return "unknown"


def _headers_too_large(message: str) -> APIError:
    return APIError(message, status=431, code="request_header_fields_too_large")


class BodyTooLarge(APIError):
    """413: the body is over the cap."""

    def __init__(self, limit: int):
        super().__init__(f"Request body is larger than {limit} bytes.", status=413)


class RequestContext:
    """Outermost middleware: request id, body cap, in-flight gauge, the request's Exchange."""

    def __init__(
        self, app, metrics: Metrics, max_body: int, max_headers: int, max_header_bytes: int
    ):
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = request_id_from(scope["headers"])
        client = client_address(scope)
        exchange = Exchange(rid, scope, self.metrics, client)
        scope.setdefault("state", {}).update(request_id=rid, exchange=exchange, client=client)
        # every log line written while this request is served carries its id (logs.py)
        context = REQUEST_ID.set(rid)
        status = 500  # what the log says if the app dies before starting a response
        header = (b"x-request-id", rid.encode())

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            # a declared size is refused before a byte is read; a chunked body is counted as
            # it arrives (_capped), so neither can make us buffer more than the cap
            if problem := self._head_problem(scope["headers"]):  # before the guard hashes a key
                return await _headers_too_large(problem).send(send_with_id, scope["path"])
            if self._declared_size(scope) > self.max_body:
                return await BodyTooLarge(self.max_body).send(send_with_id, scope["path"])
            await self.app(scope, self._capped(receive), send_with_id)
        finally:
            self.metrics.in_flight.dec()
            exchange.close(status)  # if nobody closed it with more to say
            REQUEST_ID.reset(context)

    def _head_problem(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        if len(headers) > self.max_headers:
            return f"The request has more than {self.max_headers} header lines."
        if sum(len(k) + len(v) + 4 for k, v in headers) > self.max_header_bytes:
            return f"Request headers are larger than {self.max_header_bytes} bytes."
        return None

    @staticmethod
    def _declared_size(scope) -> int:
        for k, v in scope["headers"]:
            if k == b"content-length":
                return int(v) if v.isdigit() else 0  # the HTTP parser refuses malformed ones first
        return 0

    def _capped(self, receive):
        seen = 0

        async def wrapped():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                # an HTTPException: FastAPI re-raises those from its body parsing (anything
                # else it turns into a 400 "error parsing the body"), errors.py shapes it
                raise HTTPException(413, BodyTooLarge(self.max_body).message)
            return message

        return wrapped

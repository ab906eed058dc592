"""Pure-ASGI middleware (no BaseHTTPMiddleware: it buffers streams and costs per chunk).

Every response gets an `x-request-id` (the client's if it is safe, else a fresh one), the body
size is capped before anything reads it, and each request is logged and counted once.
"""

import logging
import re
import time
import uuid

from .errors import APIError
from .metrics import Metrics

log = logging.getLogger("nanoserve.access")

SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for k, v in headers:
        if k == b"x-request-id":
            value = v.decode("latin-1")
            if SAFE_ID.fullmatch(value):
                return value
    return uuid.uuid4().hex


class BodyTooLarge(APIError):
    """Raised from inside the app while it reads the body, so the error handlers answer it."""

    def __init__(self, limit: int):
        super().__init__(f"Request body is larger than {limit} bytes.", status=413)


class RequestContext:
    def __init__(self, app, metrics: Metrics, max_body: int):
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = request_id_from(scope["headers"])
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = 500
        header = (b"x-request-id", rid.encode())

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            if self._declared_size(scope) > self.max_body:
                return await BodyTooLarge(self.max_body).send(send_with_id, scope["path"])
            await self.app(scope, self._capped(receive), send_with_id)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, rid, status, time.perf_counter() - started)

    @staticmethod
    def _declared_size(scope) -> int:
        for k, v in scope["headers"]:
            if k == b"content-length":
                return int(v) if v.isdigit() else 0
        return 0

    def _capped(self, receive):
        seen = 0

        async def wrapped():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise BodyTooLarge(self.max_body)
            return message

        return wrapped

    def _record(self, scope, rid: str, status: int, seconds: float) -> None:
        route = scope.get("route")
        name = getattr(route, "path", "unmatched")
        self.metrics.requests.labels(name, str(status)).inc()
        self.metrics.latency.labels(name).observe(seconds)
        log.info(
            "%s %s %s",
            scope["method"],
            scope["path"],
            status,
            extra={
                "request_id": rid,
                "status": status,
                "duration_ms": round(seconds * 1000, 1),
                "method": scope["method"],
                "path": scope["path"],
                "caller": scope.get("state", {}).get("caller"),
            },
        )

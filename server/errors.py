"""The one error shape: `{"error": {"message", "type", "param", "code"}}`, made here and only here.

The openai SDK reads `body["error"]` and retries every 5xx (and 408/409/429) twice, so bad input
must be a 4xx with a message that says what to fix.

One rule for the legacy POST /generate, wherever the error comes from (the guard's 401/429/503,
the 413 cap, validation, the route): the same OpenAI body plus `"detail": <message>`, the key
FastAPI used for the seed server's errors, which its old clients read. A body that fails
validation there is a 422, as FastAPI answered it; everywhere else it is a 400.
"""

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("nanoserve.errors")

LEGACY_PATHS = frozenset({"/generate"})


class APIError(Exception):
    """An error the client gets to see, in OpenAI's shape."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}
        # the `reason` label of nanoserve_rejections_total (metrics.REJECTION_REASONS)
        self.reason = reason or rejection_reason(status, code)

    def body(self, path: str | None = None) -> dict:
        """The JSON body for a request to `path` (the legacy path also gets `detail`)."""
        body: dict = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        if path in LEGACY_PATHS:
            body["detail"] = self.message
        return body

    def response(self, path: str) -> JSONResponse:
        return JSONResponse(self.body(path), self.status, headers=self.headers)

    async def send(self, send, path: str) -> None:
        """Answer with this error straight from ASGI middleware (before any route runs)."""
        body = json.dumps(self.body(path)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def sse_event(self) -> str:
        """The error as the last event of a stream that already sent its 200."""
        return f"data: {json.dumps(self.body())}\n\n"


def rejection_reason(status: int, code: str | None = None) -> str:
    """Why a request with this error status (and code) got no answer, for the metrics; errors
    that know better (a rate limit's kind, an engine failure) name their reason themselves."""
    if code == "context_length_exceeded":
        return "context_too_long"
    if status in (401, 403):
        return "auth"
    if status == 499:  # nginx's "client closed request"
        return "client_disconnect"
    if status == 503:
        return "overload"
    if status >= 500:
        return "internal_error"
    return "invalid_request"


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(message, param=param, code=code)


def model_not_found(name: str, served: tuple[str, ...]) -> APIError:
    """404 for a model this replica does not serve. nginx (deploy/nginx/nginx.conf) tries the
    next replica on a 404, so during a rolling update a client pinning the old version reaches
    a replica that still serves it, and gets this only once none does."""
    also = f" (also as {', '.join(repr(a) for a in served[1:])})" if served[1:] else ""
    return APIError(
        f"The model '{name}' does not exist; this server serves '{served[0]}'{also}.",
        status=404,
        param="model",
        code="model_not_found",
    )


def unavailable(
    message: str, retry_after: int = 1, reason: str = "overload", code: str = "server_overloaded"
) -> APIError:
    """503: this replica cannot take the request now (loading, draining, dead, full): try
    another."""
    return APIError(
        message,
        status=503,
        type="server_error",
        code=code,
        headers={"Retry-After": str(retry_after), "retry-after-ms": str(retry_after * 1000)},
        reason=reason,
    )


def internal() -> APIError:
    return APIError(
        "The server had an error while processing your request.",
        status=500,
        type="server_error",
        code="internal_error",
    )


# FastAPI's validation errors are 422 {"detail": [...]}, which the SDK surfaces as an opaque
# UnprocessableEntityError; OpenAI answers 400 with the offending parameter named.
def _param_from_loc(loc: tuple) -> str | None:
    """('body', 'stop', 3) -> 'stop': the field the client has to fix."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return parts[0] if parts else None


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON: " + str(first.get("msg")), None
    param = _param_from_loc(tuple(first.get("loc", ())))
    msg = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        return f"Missing required parameter '{param}'.", param
    if param is None:
        return f"Invalid request body: {msg}.", None
    return f"Invalid value for '{param}': {msg}.", param


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return exc.response(request.url.path)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    message, param = _validation_message(exc)
    err = invalid(message, param)
    if request.url.path in LEGACY_PATHS:
        err.status = 422
    return err.response(request.url.path)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    headers = dict(exc.headers or {})
    err = APIError(str(exc.detail), status=exc.status_code, type=kind, headers=headers)
    return err.response(request.url.path)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette calls this outside every middleware, past the request's logging context
    rid = getattr(request.state, "request_id", None)
    log.exception(
        "unhandled error on %s %s", request.method, request.url.path, extra={"request_id": rid}
    )
    return internal().response(request.url.path)


def install(app: FastAPI) -> None:
    """Route every error the app can raise through this module."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

"""The HTTP/1.1 connection layer: uvicorn's httptools protocol with bounds on request heads.

uvicorn's protocols read request headers of any size and wait forever for a request that never
finishes its headers: a 100 MB header cost 11 s of event-loop CPU, and idle half-sent requests
held connections open. Both happen before authentication can refuse anyone, so the bounds live
here, under the app:
- header bytes: the bytes of a request head still incomplete are counted as they arrive; past
  `max_header_bytes` the client gets a 431 and the connection is closed, so a huge head is never
  held whole (a head that arrived complete in one read is measured by the ASGI middleware);
- time: a request head not complete within `header_timeout` seconds of the connection opening
  (or of its first byte, on a kept-alive connection) gets a 408 and a close. An idle kept-alive
  connection is uvicorn's keep-alive timeout's business.
The count of header lines is bounded in the ASGI middleware too (middleware.py).

httptools (llhttp, in C), not uvicorn's pure-Python h11 protocol with the same bounds: with an
instant engine, h11's parsing and its per-chunk state machine were the largest single cost of a
request (bench/frontend.py).
"""

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)
TOO_SLOW = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


def _error(template: bytes, message: str) -> bytes:
    body = (
        b'{"error": {"message": "%s", "type": "invalid_request_error", "param": null, '
        % (message.encode())
        + b'"code": null}}'
    )
    return template % (len(body), body)


def bounded_protocol(max_header_bytes: int, header_timeout: float) -> type[HttpToolsProtocol]:
    """An HttpToolsProtocol class with these bounds (uvicorn builds one instance per connection)."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _in_head = True  # the next bytes belong to a request head (a new one, or the rest)
        _head_bytes = 0  # of the head still incomplete
        _progress = False  # a head or a whole request completed during the current read

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._timer = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _refuse(self, template: bytes, message: str) -> None:
            self.transport.write(_error(template, message))
            self.transport.close()

        def _too_slow(self) -> None:
            if self._in_head and not self.transport.is_closing():
                self._refuse(TOO_SLOW, f"Request headers not received within {header_timeout:g} s.")

        def data_received(self, data: bytes) -> None:
            if self._timer is None and self._in_head:
                self._arm()  # the first bytes of the next request on a kept-alive connection
            self._progress = False
            super().data_received(data)
            # A read that completed nothing was all head bytes; one that completed a request may
            # hold the start of the next head too, uncounted: the bound is off by one read at most.
            if self._in_head and not self._progress and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > max_header_bytes:
                    message = f"Request headers are larger than {max_header_bytes} bytes."
                    self._refuse(TOO_LARGE, message)

        def on_headers_complete(self) -> None:
            self._in_head, self._head_bytes, self._progress = False, 0, True
            self._disarm()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_head, self._progress = True, True
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return BoundedHttpToolsProtocol

"""The HTTP/1.1 connection layer: uvicorn's h11 protocol with bounds on request headers.

uvicorn's default parser (httptools) reads request headers of any size and waits forever for a
request that never finishes its headers: a 100 MB header cost 11 s of event-loop CPU, and idle
half-sent requests held connections open. Both happen before authentication can refuse anyone,
so the bounds live here, under the app:
- header bytes: h11 stops buffering an incomplete request head at `max_header_bytes`, so a
  huge head is never read whole; the client gets a 431 and the connection is closed (a head
  that arrived complete in one read is measured by the ASGI middleware instead);
- time: a request head not complete within `header_timeout` seconds of the connection opening
  (or of its first byte, on a kept-alive connection) gets a 408 and a close. An idle kept-alive
  connection is uvicorn's keep-alive timeout's business.
The count of header lines is bounded in the ASGI middleware too (middleware.py).
"""

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

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


def bounded_protocol(max_header_bytes: int, header_timeout: float) -> type[H11Protocol]:
    """An H11Protocol class with these bounds (uvicorn builds one instance per connection)."""

    class BoundedH11Protocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None

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

        def _too_slow(self) -> None:
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                message = f"Request headers not received within {header_timeout:g} s."
                self.transport.write(_error(TOO_SLOW, message))
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._timer is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the first bytes of the next request on a kept-alive connection
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the request head is complete
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            # h11 refuses to buffer a request head past max_incomplete_event_size; that is
            # our size bound, and deserves its own status rather than a generic 400
            if len(self.conn.trailing_data[0]) > max_header_bytes:
                message = f"Request headers are larger than {max_header_bytes} bytes."
                self.transport.write(_error(TOO_LARGE, message))
                self.transport.close()
                return
            super().send_400_response(msg)

    return BoundedH11Protocol

"""The HTTP/1.1 connection layer: uvicorn's httptools protocol with bounds on every connection.

uvicorn's protocols trust the client to finish what it starts. Everything below happens before
authentication can refuse anyone, so the bounds live here, under the app:
- header bytes: the bytes of a request head still incomplete are counted as they arrive; past
  `max_header_bytes` the client gets a 431 and the connection is closed, so a huge head is never
  held whole (a head that arrived complete in one read is measured by the ASGI middleware);
- head time: a request head not complete within `header_timeout` seconds of the connection
  opening (or of its first byte, on a kept-alive connection) gets a 408 and a close. An idle
  kept-alive connection is uvicorn's keep-alive timeout's business;
- body time: the rest of a body not in `body_timeout` seconds after its head gets a 408 and a
  close (the app's receive() then sees a disconnect, and the caller's slot is freed);
- a response sent before its request's body was all read (401, 413, 429...) closes the
  connection, as uvicorn's h11 protocol does: the connection cannot be reused, and kept open
  it is held by one body byte forever (it cancels the keep-alive timer, and no head is due);
- pipelining: uvicorn reads on after each response while requests are still queued; here
  reading stays paused until the queue is empty, and a connection with more than
  `MAX_PIPELINED` requests queued is dropped (4 MB of pipelined GETs once cost 260 MB);
- connections: past `max_connections` open at once, a new one gets a 503 and a close.
The count of header lines is bounded in the ASGI middleware too (middleware.py).

httptools (llhttp, in C), not uvicorn's pure-Python h11 protocol with the same bounds: with an
instant engine, h11's parsing and its per-chunk state machine were the largest single cost of a
request (bench/frontend.py).
"""

import asyncio
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Requests a client may queue behind the one being answered. No SDK or browser pipelines; a
# client that sends this many without reading answers is flooding.
MAX_PIPELINED = 8

STATUS = {
    408: b"408 Request Timeout",
    431: b"431 Request Header Fields Too Large",
    503: b"503 Service Unavailable",
}


def _error(status: int, message: str, extra: bytes = b"") -> bytes:
    """A whole response in OpenAI's error shape, with `connection: close`."""
    kind = b"server_error" if status >= 500 else b"invalid_request_error"
    body = b'{"error": {"message": "%s", "type": "%s", "param": null, "code": null}}' % (
        message.encode(),
        kind,
    )
    return (
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nconnection: close\r\n%s"
        b"content-length: %d\r\n\r\n%s" % (STATUS[status], extra, len(body), body)
    )


def bounded_protocol(
    max_header_bytes: int, header_timeout: float, body_timeout: float, max_connections: int
) -> type[HttpToolsProtocol]:
    """An HttpToolsProtocol class with these bounds (uvicorn builds one instance per connection)."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _in_head = True  # the next bytes belong to a request head (a new one, or the rest)
        _head_bytes = 0  # of the head still incomplete
        _progress = False  # a head or a whole request completed during the current read
        _dropped = False  # over a bound: what else arrives is not parsed

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                message = f"The server has {max_connections} connections open; retry shortly."
                self._refuse(_error(503, message, b"retry-after: 1\r\n"))
                return
            self._arm(header_timeout, self._head_too_slow)

        def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, callback)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _refuse(self, response: bytes) -> None:
            self._dropped = True
            self.transport.write(response)
            self.transport.close()

        def _head_too_slow(self) -> None:
            if self._in_head and not self.transport.is_closing():
                message = f"Request headers not received within {header_timeout:g} s."
                self._refuse(_error(408, message))

        def _body_too_slow(self) -> None:
            if self.transport.is_closing():
                return
            if self.cycle.response_started:  # no room for our answer: just close
                self._dropped = True
                self.transport.close()
                return
            self._refuse(_error(408, f"Request body not received within {body_timeout:g} s."))

        def data_received(self, data: bytes) -> None:
            if self._dropped:
                return
            if self._timer is None and self._in_head:
                self._arm(header_timeout, self._head_too_slow)  # a kept-alive connection's next
            self._progress = False
            super().data_received(data)
            # A read that completed nothing was all head bytes; one that completed a request may
            # hold the start of the next head too, uncounted: the bound is off by one read at most.
            if self._in_head and not self._progress and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > max_header_bytes:
                    message = f"Request headers are larger than {max_header_bytes} bytes."
                    self._refuse(_error(431, message))

        # llhttp parses a whole read before returning: once dropped, the rest of it is skipped
        # here, so a read of thousands of pipelined requests makes no more request objects.
        def on_message_begin(self) -> None:
            if not self._dropped:
                super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            if not self._dropped:
                super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            if not self._dropped:
                super().on_header(name, value)

        def on_headers_complete(self) -> None:
            if self._dropped:
                return
            self._in_head, self._head_bytes, self._progress = False, 0, True
            self._arm(body_timeout, self._body_too_slow)  # disarmed when the message completes
            super().on_headers_complete()
            if len(self.pipeline) > MAX_PIPELINED:
                self._dropped = True
                self.transport.abort()  # it reads no answers: flushing them would never end

        def on_body(self, body: bytes) -> None:
            if not self._dropped:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._dropped:
                return
            self._in_head, self._progress = True, True
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            # answered before its body was all read (the queue is empty, so self.cycle is the
            # request answered): the connection can't be reused
            if not self.pipeline and self.cycle.more_body and not self.transport.is_closing():
                self._disarm()
                self.transport.close()
            super().on_response_complete()
            if self.pipeline:
                self.flow.pause_reading()  # uvicorn resumed it: not before the queue is empty

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return BoundedHttpToolsProtocol

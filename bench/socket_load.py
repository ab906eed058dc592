"""A load generator fast enough to measure a front end: raw keep-alive HTTP/1.1 over asyncio
protocols, responses parsed by httptools (C), on uvloop.

`hammer(port, body, connections, seconds)` keeps `connections` connections busy sending the same
POST back to back for `seconds`, and returns what each request took: status, time to the first
body byte, total time, and (for SSE) the number of `data:` events. An httpx or aiohttp client
spends more CPU per request than the server it measures; this one spends a few microseconds.
"""

import asyncio
import json
import time
from dataclasses import dataclass

import httptools
import uvloop


@dataclass
class Sample:
    status: int
    first_byte_s: float  # from sending the request to the first body byte
    total_s: float
    events: int  # SSE events (`data:` lines), [DONE] included


class _Conn(asyncio.Protocol):
    """One connection: sends `request`, parses the response, sends it again, until told to stop."""

    def __init__(self, request: bytes, stop_at: float, samples: list, done: asyncio.Future):
        self.request, self.stop_at, self.samples, self.done = request, stop_at, samples, done
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        self.sent, self.first, self.events = time.perf_counter(), None, 0
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._finish(e)

    def on_body(self, body: bytes) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.events += body.count(b"data:")

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        status = self.parser.get_status_code()
        self.samples.append(
            Sample(status, (self.first or now) - self.sent, now - self.sent, self.events)
        )
        if now < self.stop_at and self.parser.should_keep_alive():
            self._send()
        else:
            self._finish(None)

    def connection_lost(self, exc) -> None:
        self._finish(exc or ConnectionError("server closed the connection"))

    def _finish(self, exc) -> None:
        if not self.done.done():
            self.transport.close()
            self.done.set_result(exc)


def request_bytes(path: str, body: dict, token: str | None) -> bytes:
    data = json.dumps(body).encode()
    auth = f"authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"{auth}content-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def _hammer(port: int, request: bytes, connections: int, seconds: float) -> tuple:
    loop = asyncio.get_running_loop()
    samples: list[Sample] = []
    stop_at = time.perf_counter() + seconds
    futures = [loop.create_future() for _ in range(connections)]
    t0 = time.perf_counter()
    for fut in futures:
        await loop.create_connection(
            lambda f=fut: _Conn(request, stop_at, samples, f), "127.0.0.1", port
        )
    errors = [e for e in await asyncio.gather(*futures) if e is not None]
    return samples, time.perf_counter() - t0, errors


def hammer(
    port: int, body: dict, connections: int, seconds: float, token: str | None = None
) -> tuple[list[Sample], float, list]:
    """(samples, wall seconds, connection errors) of `seconds` of back-to-back requests."""
    request = request_bytes("/v1/completions", body, token)
    return uvloop.run(_hammer(port, request, connections, seconds))

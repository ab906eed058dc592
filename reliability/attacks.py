"""What an anonymous client does to a server, on raw sockets: connect from any loopback
address, flood a connection with pipelined requests, read until the server closes."""

import socket

import httpx
import psutil

PIPELINED = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"


def connect(url: str, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    """A TCP connection to the server at `url`, from `source` (any of 127.0.0.0/8 is here)."""
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout, source_address=(source, 0))


def client_from(source: str, **kwargs) -> httpx.Client:
    """An httpx client whose connections come from `source` (kwargs: httpx.Client's)."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(transport=transport, timeout=60, **kwargs)


def read_until_closed(s: socket.socket, wait: float) -> tuple[bytes, bool]:
    """What arrives until the server closes (True) or `wait` seconds pass (False)."""
    s.settimeout(wait)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except TimeoutError:
        return out, False
    except ConnectionResetError:
        pass
    return out, True


def flood(url: str, total: int) -> bool:
    """Send `total` bytes of pipelined requests on one connection without reading an answer;
    True if the server dropped the connection."""
    with connect(url) as s:
        s.settimeout(5)
        sent, chunk = 0, PIPELINED * (65536 // len(PIPELINED))
        try:
            while sent < total:
                sent += s.send(chunk)
        except OSError:  # reset, or the server stopped reading for 5 s: either ends the flood
            pass
        return read_until_closed(s, 5)[1]


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20

"""Failed authentications per client address, so keys can't be guessed at line rate.

An address that fails more than `max_failures` times in a window gets 429 for the rest of that
window, whatever it sends. Memory is bounded: at most `max_addresses` are tracked, the least
recently seen dropped first (the `limits` library's memory storage has no such cap, and a
scan from many addresses must not grow the process). Behind a proxy every client shares the
proxy's address: size the limit for that, or let the proxy limit by client.
"""

import time
from collections import OrderedDict


class Lockout:
    def __init__(self, max_failures: int, window: float = 60.0, max_addresses: int = 10_000):
        self.max_failures = max_failures
        self.window = window
        self.max_addresses = max_addresses
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # addr -> (start, n)

    def _current(self, address: str, now: float) -> tuple[float, int]:
        start, n = self._seen.get(address, (now, 0))
        return (now, 0) if now - start >= self.window else (start, n)

    def retry_after(self, address: str) -> float | None:
        """Seconds until `address` may try again, or None if it may now."""
        now = time.monotonic()
        start, n = self._current(address, now)
        return self.window - (now - start) if n >= self.max_failures else None

    def failed(self, address: str) -> None:
        now = time.monotonic()
        start, n = self._current(address, now)
        self._seen[address] = (start, n + 1)
        self._seen.move_to_end(address)
        while len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)

"""Failed authentications per client address, so keys can't be guessed at line rate.

Only failures are refused: a request with valid credentials is never looked up here, so an
attacker who fails from the address a victim shares (a proxy's, a NAT's) locks out only further
*failed* attempts, never the victim. An address that fails more than `max_failures` times in a
window gets 429 for its failed attempts for the rest of that window. A valid request does not
clear the count: otherwise one valid key would buy an attacker unlimited guesses at others.

Memory is bounded: at most `max_addresses` are tracked, the least recently seen dropped first
(the `limits` library's memory storage has no such cap, and a scan from many addresses must not
grow the process), and each is a canonical IP address or IPv6 /64 (`lockout_key`), never a
client-written string.
"""

import ipaddress
import time
from collections import OrderedDict

IPV6_PREFIX = 64  # one IPv6 subscriber gets a /64: counting its addresses apart lets it evade


def lockout_key(address: str) -> str:
    """What failures are counted under: the address itself, or an IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:  # ::ffff:10.0.0.1 is 10.0.0.1
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))


class Lockout:
    def __init__(self, max_failures: int, window: float = 60.0, max_addresses: int = 10_000):
        self.max_failures = max_failures
        self.window = window
        self.max_addresses = max_addresses
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (start, n)

    def _current(self, key: str, now: float) -> tuple[float, int]:
        start, n = self._seen.get(key, (now, 0))
        return (now, 0) if now - start >= self.window else (start, n)

    def retry_after(self, address: str) -> float | None:
        """Seconds until `address` may fail again, or None if it may now."""
        now = time.monotonic()
        start, n = self._current(lockout_key(address), now)
        return self.window - (now - start) if n >= self.max_failures else None

    def failed(self, address: str) -> None:
        now = time.monotonic()
        key = lockout_key(address)
        start, n = self._current(key, now)
        self._seen[key] = (start, n + 1)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)

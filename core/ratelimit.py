"""Per-client request limits, in memory: a fixed number of requests per sliding window.

A limiter counts one process's requests (several server processes each count their own).
It holds at most ``max_keys`` clients; when full, the client seen longest ago is forgotten,
so a flood from many addresses cannot grow it without bound. Time comes from the caller
(the runtime's clock), so tests move it instead of sleeping.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections import OrderedDict, deque


def client_key(host: str | None) -> str:
    """The address a limit counts: IPv4 as is, IPv6 by its /64 (one subscriber's block)."""
    if not host:
        return "-"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RateLimiter:
    """At most ``limit`` hits per ``window`` seconds for each key."""

    def __init__(self, *, limit: int, window: float, max_keys: int = 100_000):
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str, now: float) -> int | None:
        """Count a request; None if allowed, else the seconds after which one will be."""
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= self.max_keys:
                    self._hits.popitem(last=False)
                hits = self._hits[key] = deque()
            else:
                self._hits.move_to_end(key)
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(1, math.ceil(hits[0] + self.window - now))
            hits.append(now)
            return None

"""The client address of a request, for per-address sign-in limits.

The TCP peer is the client, unless the peer is a reverse proxy listed in
``SHOUHU_TRUSTED_PROXIES``: then ``X-Forwarded-For`` is read from the right,
skipping trusted proxies, and the first other address is the client. A header
sent by anyone else is ignored, so a client cannot pick its own address.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def trusted_networks(setting: str) -> tuple[Network, ...]:
    """The networks of a ``trusted_proxies`` setting (bad entries are a ConfigError at start-up)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in setting.split(",") if part.strip())


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(text: str, networks: tuple[Network, ...]) -> bool:
    ip = _ip(text)
    return ip is not None and any(ip in net for net in networks)


def client_address(request: Any, trusted_proxies: str) -> str:
    """The address a request came from, as the limits count it."""
    peer = request.client.host if request.client else ""
    networks = trusted_networks(trusted_proxies)
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for v in request.headers.getlist("x-forwarded-for") for h in v.split(",") if h.strip()]
    for hop in reversed(hops):
        if _ip(hop) is None:
            return peer  # a malformed chain: count it against the proxy
        if not _trusted(hop, networks):
            return str(_ip(hop))
    return peer

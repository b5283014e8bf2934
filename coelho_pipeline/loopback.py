"""Which hosts are this machine: the only ones plain http:// may carry a credential to."""

from __future__ import annotations

from ipaddress import ip_address

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 and the names that resolve to them by convention (never through DNS)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False

"""Which URLs may carry this kiosk's secrets: ``https://``, or ``http://`` to a loopback host only (pure)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["https_or_loopback", "is_loopback"]


def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def https_or_loopback(url: str) -> bool:
    """True for an ``https://`` URL with a host, or ``http://`` to a loopback host (a local test double).

    Tokens and keys travel in these requests: never in clear text over a network.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return bool(host) and (parts.scheme == "https" or (parts.scheme == "http" and is_loopback(host)))

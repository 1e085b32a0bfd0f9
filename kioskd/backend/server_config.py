"""``backend.toml`` for the reference signing backend, and the per-kiosk token bucket.

Both are pure: the config is validated the same way as ``config.toml`` (every
problem named by its dotted key, unknown keys rejected); the bucket takes the
time as an argument.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from kioskd.backend.resp import parse_endpoint
from kioskd.schema import ConfigError, load_as, parse_as
from kioskd.urls import https_or_loopback, is_loopback

__all__ = [
    "DEFAULT_LISTEN",
    "AddressThrottle",
    "BackendServerConfig",
    "KioskEntry",
    "TokenBucket",
    "is_loopback",
    "load_server_config",
    "load_server_config_for",
    "parse_listen",
    "parse_server_config",
]

DEFAULT_LISTEN = "127.0.0.1:8700"
DEFAULT_API_BASE = "https://api.elevenlabs.io"
DEFAULT_RATE_PER_MINUTE = 6.0
DEFAULT_BURST = 3
DEFAULT_UPSTREAM_TIMEOUT = 5.0
#: Seconds between a kiosk's heartbeats when it does not say (offline after three missed ones).
DEFAULT_HEARTBEAT_INTERVAL = 60.0
#: Requests without a valid kiosk token, per client address: this many a minute, up to the burst.
DEFAULT_UNAUTHENTICATED_RATE_PER_MINUTE = 6.0
DEFAULT_UNAUTHENTICATED_BURST = 10
#: At most this many client addresses are remembered by the throttle (the oldest are forgotten).
MAX_THROTTLED_ADDRESSES = 10_000
SECONDS_PER_MINUTE = 60.0

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


def parse_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:8700"`` for IPv6) → ``(host, port)``. Raises ValueError."""
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT such as {DEFAULT_LISTEN!r}, got {listen!r}")
    return host, int(port)


@dataclass(frozen=True)
class KioskEntry:
    """One kiosk allowed to ask for signed URLs: its id, its token's SHA-256, its agents."""

    id: str = ""
    token_sha256: str = ""
    agents: list[str] = field(default_factory=list)

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not self.id.strip():
            out.append(("id", "must not be empty"))
        if not _SHA256_HEX.fullmatch(self.token_sha256):
            out.append(("token_sha256", "must be 64 hex digits (run `kioskd backend hash-token`)"))
        if not self.agents or any(not a.strip() for a in self.agents):
            out.append(("agents", "must list at least one agent id, none empty"))
        return out


@dataclass(frozen=True)
class BackendServerConfig:
    """Where to listen, where the ElevenLabs API is, rate limits, and the kiosks."""

    listen: str = DEFAULT_LISTEN
    api_base: str = DEFAULT_API_BASE
    rate_per_minute: float = DEFAULT_RATE_PER_MINUTE
    burst: int = DEFAULT_BURST
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    #: Shared state for replicas (``redis://host:6379/0``); empty = in this process only.
    redis_url: str = ""
    #: SHA-256 of the operator's token for ``/fleet`` and ``/fleet.json``; empty = fleet view off.
    operator_token_sha256: str = ""
    #: SHA-256 of a token ``/metrics`` then requires; empty = open (the listen address decides).
    metrics_token_sha256: str = ""
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    unauthenticated_rate_per_minute: float = DEFAULT_UNAUTHENTICATED_RATE_PER_MINUTE
    unauthenticated_burst: int = DEFAULT_UNAUTHENTICATED_BURST
    kiosk: list[KioskEntry] = field(default_factory=list)

    def problems(self) -> list[tuple[str, str]]:
        out = []
        try:
            parse_listen(self.listen)
        except ValueError as exc:
            out.append(("listen", str(exc)))
        if not https_or_loopback(self.api_base):
            out.append(("api_base", f"must be an https:// URL (http:// only on loopback), got {self.api_base!r}"))
        if not self.rate_per_minute > 0:
            out.append(("rate_per_minute", "must be positive"))
        if self.burst < 1:
            out.append(("burst", "must be at least 1"))
        if not self.unauthenticated_rate_per_minute > 0:
            out.append(("unauthenticated_rate_per_minute", "must be positive"))
        if self.unauthenticated_burst < 1:
            out.append(("unauthenticated_burst", "must be at least 1"))
        if not self.upstream_timeout > 0:
            out.append(("upstream_timeout", "must be positive"))
        if self.redis_url:
            try:
                parse_endpoint(self.redis_url)
            except ValueError as exc:
                out.append(("redis_url", str(exc)))
        for key in ("operator_token_sha256", "metrics_token_sha256"):
            value = getattr(self, key)
            if value and not _SHA256_HEX.fullmatch(value):
                out.append((key, "must be 64 hex digits (run `kioskd backend hash-token`) or empty"))
        if not self.heartbeat_interval > 0:
            out.append(("heartbeat_interval", "must be positive"))
        if not self.kiosk and not self.redis_url:
            out.append(("kiosk", "add at least one [[kiosk]] table (or a redis_url and `kioskd backend kiosks add`)"))
        ids = [k.id for k in self.kiosk]
        hashes = [k.token_sha256.lower() for k in self.kiosk]
        for i, entry in enumerate(self.kiosk):
            if ids.index(entry.id) != i:
                out.append((f"kiosk[{i}].id", f"duplicate kiosk id {entry.id!r}"))
            if hashes.index(entry.token_sha256.lower()) != i:
                out.append((f"kiosk[{i}].token_sha256", "same token hash as another kiosk"))
        return out


def parse_server_config(data: dict[str, Any]) -> BackendServerConfig:
    """Validate a parsed TOML tree. Raises ConfigError naming every bad key."""
    return parse_as(BackendServerConfig, data)


def load_server_config(path: str | os.PathLike[str]) -> BackendServerConfig:
    """Read and validate ``backend.toml``. Raises ConfigError naming every bad key."""
    return load_as(BackendServerConfig, path)


def load_server_config_for(command: str, path: str | os.PathLike[str]) -> BackendServerConfig | None:
    """:func:`load_server_config` for a command line: None after printing each problem as ``command: problem``."""
    try:
        return load_server_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{command}: {problem}", file=sys.stderr)
        return None


class TokenBucket:
    """``rate_per_minute`` requests on average, up to ``burst`` at once. Time is passed in."""

    def __init__(self, rate_per_minute: float, burst: int, now: float) -> None:
        self.rate = rate_per_minute / SECONDS_PER_MINUTE  # tokens per second
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def wait(self, now: float) -> float:
        """0.0 if a token is available now, else the seconds until one is (nothing spent)."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> float:
        """Spend one token: 0.0 if allowed, else the seconds until one is available (nothing spent)."""
        wait = self.wait(now)
        if wait == 0.0:
            self.tokens -= 1.0
        return wait

    def refund(self) -> None:
        """Give back a token spent on something that did not happen (e.g. an upstream failure)."""
        self.tokens = min(float(self.burst), self.tokens + 1.0)

    @property
    def full(self) -> bool:
        """True when the bucket holds its whole burst (nothing to remember)."""
        return self.tokens >= self.burst

    @staticmethod
    def retry_after(wait: float) -> int:
        """A wait as a ``Retry-After`` value: whole seconds, rounded up, at least 1."""
        return max(1, math.ceil(wait))


class AddressThrottle:
    """A token bucket per client address for requests that carried no valid kiosk token.

    Failed requests are charged (:meth:`charge`); while an address's bucket is empty
    :meth:`wait` says how long it must wait. Memory is bounded: at most ``max_addresses``
    are remembered, the least recently charged forgotten first. Time is passed in.
    """

    def __init__(self, rate_per_minute: float, burst: int, max_addresses: int = MAX_THROTTLED_ADDRESSES) -> None:
        self.rate_per_minute = rate_per_minute
        self.burst = burst
        self.max_addresses = max_addresses
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, address: str, now: float) -> float:
        """0.0 if ``address`` may be heard now, else the seconds it must wait."""
        bucket = self._buckets.get(address)
        if bucket is None:
            return 0.0
        wait = bucket.wait(now)
        if bucket.full:
            del self._buckets[address]
        return wait

    def charge(self, address: str, now: float) -> None:
        """Count one refused request from ``address``."""
        bucket = self._buckets.pop(address, None) or TokenBucket(self.rate_per_minute, self.burst, now)
        bucket.take(now)
        self._buckets[address] = bucket
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)

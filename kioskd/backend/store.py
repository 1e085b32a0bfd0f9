"""Where the signing backend keeps its state: one small protocol, two implementations.

:class:`MemoryStore` keeps everything in this process (one replica, the default);
:class:`kioskd.backend.redis_store.RedisStore` keeps it in Redis so any number of
replicas share it (``redis_url`` in ``backend.toml``). Both make each decision in
one step: a rate-limit charge, a refund, a heartbeat, a revocation.

What lives here: the per-kiosk token buckets, the latest heartbeat and last-seen
time per kiosk, the kiosk registry (kiosks added at run time, beside the TOML list)
and revocations. A store that cannot answer raises :class:`StoreUnavailable`; the
server turns that into 503 with ``Retry-After`` (fail closed).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from kioskd.backend.server_config import BackendServerConfig, KioskEntry, TokenBucket

__all__ = [
    "Admission",
    "Heartbeat",
    "KioskRecord",
    "MemoryStore",
    "Store",
    "StoreUnavailable",
    "open_store",
]

#: Where a kiosk entry comes from: the TOML list or the run-time registry.
Source = Literal["toml", "registry"]


class StoreUnavailable(Exception):
    """The shared state cannot be reached; the message is safe to log (no URL credentials)."""


@dataclass(frozen=True)
class Heartbeat:
    """A kiosk's latest status exactly as it sent it, and when (Unix seconds)."""

    kiosk_id: str
    status: dict[str, Any]
    last_seen: float


@dataclass(frozen=True)
class Admission:
    """A signed-URL request's kiosk, whether it may use the agent, and the charge's wait (0.0: charged)."""

    kiosk: KioskEntry
    allowed: bool = True
    wait: float = 0.0


@dataclass(frozen=True)
class KioskRecord:
    """One kiosk the backend knows: its entry, where it comes from, whether it is revoked."""

    entry: KioskEntry
    source: Source
    revoked: bool = False


class Store(Protocol):
    """The backend's state. Every method may raise :class:`StoreUnavailable`."""

    async def kiosk_for_token(self, token_sha256: str) -> KioskEntry | None:
        """The kiosk (not revoked) whose token has this SHA-256 hex digest, or None."""
        ...

    async def take(self, kiosk_id: str) -> float:
        """Charge one signed URL: 0.0 if charged, else seconds until one is available (nothing charged)."""
        ...

    async def refund(self, kiosk_id: str) -> None:
        """Give back one charge (the URL was not issued); never above the burst."""
        ...

    async def record_heartbeat(self, kiosk_id: str, status: dict[str, Any]) -> float:
        """Keep ``status`` as this kiosk's latest; returns the last-seen time (Unix seconds)."""
        ...

    async def admit_signed_url(self, token_sha256: str, agent_id: str) -> Admission | None:
        """None for an unknown or revoked token; else the kiosk, whether the agent is allowed,
        and (only if it is) the charge, as :meth:`take` — in one step."""
        ...

    async def admit_heartbeat(self, token_sha256: str, status: dict[str, Any]) -> tuple[KioskEntry, float] | None:
        """None for an unknown or revoked token; else the kiosk and :meth:`record_heartbeat`'s time — in one step."""
        ...

    async def heartbeats(self) -> list[Heartbeat]:
        """The latest heartbeat of every kiosk that ever sent one."""
        ...

    async def kiosks(self) -> list[KioskRecord]:
        """Every kiosk: the TOML list, then the registry, revoked ones included."""
        ...

    async def add_kiosk(self, entry: KioskEntry) -> None:
        """Register a kiosk. Raises ValueError if its id or token is taken (a revoked registry id may be reused)."""
        ...

    async def revoke(self, kiosk_id: str) -> bool:
        """Refuse this kiosk's token from now on (every replica); False if no such kiosk."""
        ...


def _same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.lower(), b.lower())


def find_toml_kiosk(kiosks: list[KioskEntry], token_sha256: str) -> KioskEntry | None:
    """The TOML kiosk with this token hash, comparing with every entry in constant time."""
    found = None
    for entry in kiosks:  # no early exit: same work for every token
        if _same_digest(entry.token_sha256, token_sha256):
            found = entry
    return found


class MemoryStore:
    """All state in this process: correct for exactly one replica."""

    def __init__(
        self,
        config: BackendServerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._clock = clock
        self._wall_clock = wall_clock
        self._buckets: dict[str, TokenBucket] = {}
        self._heartbeats: dict[str, Heartbeat] = {}
        self._registry: dict[str, KioskEntry] = {}
        self._revoked: set[str] = set()

    async def kiosk_for_token(self, token_sha256: str) -> KioskEntry | None:
        """The kiosk (not revoked) whose token has this SHA-256 hex digest, or None."""
        found = find_toml_kiosk(self._config.kiosk, token_sha256)
        if found is None:
            found = next((e for e in self._registry.values() if _same_digest(e.token_sha256, token_sha256)), None)
        return None if found is None or found.id in self._revoked else found

    def _bucket(self, kiosk_id: str) -> TokenBucket:
        bucket = self._buckets.get(kiosk_id)
        if bucket is None:
            bucket = TokenBucket(self._config.rate_per_minute, self._config.burst, self._clock())
            self._buckets[kiosk_id] = bucket
        return bucket

    async def take(self, kiosk_id: str) -> float:
        """Charge one signed URL: 0.0 if charged, else seconds until one is available."""
        return self._bucket(kiosk_id).take(self._clock())

    async def refund(self, kiosk_id: str) -> None:
        """Give back one charge; never above the burst."""
        self._bucket(kiosk_id).refund()

    async def record_heartbeat(self, kiosk_id: str, status: dict[str, Any]) -> float:
        """Keep ``status`` as this kiosk's latest; returns the last-seen time."""
        now = self._wall_clock()
        self._heartbeats[kiosk_id] = Heartbeat(kiosk_id, status, now)
        return now

    async def admit_signed_url(self, token_sha256: str, agent_id: str) -> Admission | None:
        """The look-up, the agent check and the charge."""
        kiosk = await self.kiosk_for_token(token_sha256)
        if kiosk is None:
            return None
        if agent_id not in kiosk.agents:
            return Admission(kiosk, allowed=False)
        return Admission(kiosk, wait=await self.take(kiosk.id))

    async def admit_heartbeat(self, token_sha256: str, status: dict[str, Any]) -> tuple[KioskEntry, float] | None:
        """The look-up and the record."""
        kiosk = await self.kiosk_for_token(token_sha256)
        return None if kiosk is None else (kiosk, await self.record_heartbeat(kiosk.id, status))

    async def heartbeats(self) -> list[Heartbeat]:
        """The latest heartbeat of every kiosk that ever sent one."""
        return list(self._heartbeats.values())

    async def kiosks(self) -> list[KioskRecord]:
        """Every kiosk: the TOML list, then the registry."""
        toml = [KioskRecord(e, "toml", e.id in self._revoked) for e in self._config.kiosk]
        return toml + [KioskRecord(e, "registry", e.id in self._revoked) for e in self._registry.values()]

    async def add_kiosk(self, entry: KioskEntry) -> None:
        """Register a kiosk. Raises ValueError if its id or token is taken."""
        check_new_kiosk(entry, await self.kiosks())
        self._registry[entry.id] = entry
        self._revoked.discard(entry.id)

    async def revoke(self, kiosk_id: str) -> bool:
        """Refuse this kiosk's token from now on; False if no such kiosk."""
        if not any(r.entry.id == kiosk_id for r in await self.kiosks()):
            return False
        self._revoked.add(kiosk_id)
        return True


def check_new_kiosk(entry: KioskEntry, known: list[KioskRecord]) -> None:
    """Raise ValueError naming the problem if ``entry`` cannot be added next to ``known``."""
    problems = [f"{key}: {message}" for key, message in entry.problems()]
    if problems:
        raise ValueError("; ".join(problems))
    for record in known:
        if record.entry.id == entry.id and (record.source == "toml" or not record.revoked):
            raise ValueError(f"a kiosk with id {entry.id!r} already exists ({record.source})")
        if _same_digest(record.entry.token_sha256, entry.token_sha256):
            raise ValueError(f"kiosk {record.entry.id!r} already has that token")


def open_store(config: BackendServerConfig) -> AbstractAsyncContextManager[Store]:
    """The store ``config`` asks for: Redis with ``redis_url``, else this process."""
    if config.redis_url:
        from kioskd.backend.redis_store import open_redis_store

        return open_redis_store(config)
    return _memory(config)


@asynccontextmanager
async def _memory(config: BackendServerConfig) -> AsyncIterator[Store]:
    yield MemoryStore(config)

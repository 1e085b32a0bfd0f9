"""The backend's state in Redis, shared by every replica (``redis_url`` in ``backend.toml``).

Each decision is one Lua script, so it is atomic across replicas and uses Redis's
clock (``TIME``), never the replicas' own: a kiosk gets exactly its allowance
however many replicas it talks to. Keys (all under ``kioskd:``):

Signed URLs and heartbeats are admitted in one round trip each (look-up, revocation,
agent check and charge, or look-up and record, in one script).

- ``bucket:<id>`` hash ``tokens``, ``updated``; expires once it would be full again
- ``hb:<id>`` the latest heartbeat (JSON as sent); ``seen`` sorted set id → last seen
- ``kiosk:<id>`` hash ``token_sha256``, ``agents`` (JSON); ``token:<sha256>`` → id;
  ``kiosks`` set of registered ids; ``revoked`` set of revoked ids (TOML kiosks too)

The client is :mod:`kioskd.backend.resp` (RESP over Trio sockets). Every Redis error
or timeout becomes :class:`~kioskd.backend.store.StoreUnavailable`; the next call
connects afresh, so the backend recovers by itself when Redis returns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec
import trio

from kioskd.backend.resp import RedisClient, Reply, ReplyError, Script, Word, parse_endpoint
from kioskd.backend.server_config import SECONDS_PER_MINUTE, BackendServerConfig, KioskEntry
from kioskd.backend.store import (
    Admission,
    Heartbeat,
    KioskRecord,
    Store,
    StoreUnavailable,
    check_new_kiosk,
    find_toml_kiosk,
)

__all__ = ["PREFIX", "REDIS_TIMEOUT", "RedisStore", "open_redis_store"]

log = logging.getLogger(__name__)

PREFIX = "kioskd:"
#: Seconds to connect to Redis or wait for one answer before failing closed.
REDIS_TIMEOUT = 1.0
#: Heartbeats and registry entries are read back this many per round trip.
BATCH = 500

T = TypeVar("T")

# kiosk(token sha256 in lower case, TOML kiosk id or "") → id, agents JSON ("" for TOML) | nil
_KIOSK = """
local function kiosk(digest, toml_id)
  local id = toml_id
  local agents = ''
  if id == '' then
    id = redis.call('GET', '{p}token:' .. digest)
    if not id then return nil end
    agents = redis.call('HGET', '{p}kiosk:' .. id, 'agents') or ''
  end
  if redis.call('SISMEMBER', '{p}revoked', id) == 1 then return nil end
  return id, agents
end
"""

# bucket(key, tokens per second, burst, "take" | "refund") → seconds to wait (0 = charged)
_BUCKET_FUNCTION = """
local function bucket(key, rate, burst, op)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local b = redis.call('HMGET', key, 'tokens', 'updated')
  local tokens = tonumber(b[1]) or burst
  local updated = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
  updated = math.max(updated, now)
  local wait = 0
  if op == 'refund' then
    tokens = math.min(burst, tokens + 1)
  elseif tokens >= 1 then
    tokens = tokens - 1
  else
    wait = (1 - tokens) / rate
  end
  redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'updated', string.format('%.17g', updated))
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
  return wait
end
"""

# heartbeat(id, status JSON) → last seen (Unix seconds, Redis's clock) as text
_HEARTBEAT_FUNCTION = """
local function heartbeat(id, body)
  local t = redis.call('TIME')
  local now = string.format('%.17g', tonumber(t[1]) + tonumber(t[2]) / 1000000)
  redis.call('SET', '{p}hb:' .. id, body)
  redis.call('ZADD', '{p}seen', now, id)
  return now
end
"""

# ARGV: token sha256, TOML kiosk id or "" → false | {id, agents}
_AUTH = _KIOSK + """
local id, agents = kiosk(ARGV[1], ARGV[2])
if not id then return false end
return {id, agents}
"""

# ARGV: id, tokens per second, burst, "take" | "refund" → seconds to wait ("0" = charged)
_BUCKET = _BUCKET_FUNCTION + """
return string.format('%.17g', bucket('{p}bucket:' .. ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]))
"""

# ARGV: id, status JSON → last seen
_HEARTBEAT = _HEARTBEAT_FUNCTION + """
return heartbeat(ARGV[1], ARGV[2])
"""

# A signed URL's whole admission in one round trip. ARGV: token sha256, TOML kiosk id or "",
# "1" if that TOML kiosk may use the agent, agent, tokens per second, burst
# → false (no such kiosk) | {id, agents, "forbidden" | seconds to wait ("0" = charged)}
_SIGN = _KIOSK + _BUCKET_FUNCTION + """
local id, agents = kiosk(ARGV[1], ARGV[2])
if not id then return false end
local allowed = ARGV[3] == '1'
if ARGV[2] == '' then
  local ok, list = pcall(cjson.decode, agents)
  if ok and type(list) == 'table' then
    for _, agent in ipairs(list) do
      if agent == ARGV[4] then allowed = true end
    end
  end
end
if not allowed then return {id, agents, 'forbidden'} end
return {id, agents, string.format('%.17g', bucket('{p}bucket:' .. id, tonumber(ARGV[5]), tonumber(ARGV[6]), 'take'))}
"""

# A heartbeat's admission and record in one round trip. ARGV: token sha256, TOML kiosk id or "",
# status JSON → false (no such kiosk) | {id, agents, last seen}
_ADMIT_HEARTBEAT = _KIOSK + _HEARTBEAT_FUNCTION + """
local id, agents = kiosk(ARGV[1], ARGV[2])
if not id then return false end
return {id, agents, heartbeat(id, ARGV[3])}
"""

# ARGV: id, token sha256, agents JSON → "ok" | "id" | "token"
_ADD = """
local key = '{p}kiosk:' .. ARGV[1]
local revoked = redis.call('SISMEMBER', '{p}revoked', ARGV[1]) == 1
if redis.call('EXISTS', key) == 1 and not revoked then return 'id' end
if redis.call('EXISTS', '{p}token:' .. ARGV[2]) == 1 then return 'token' end
local old = redis.call('HGET', key, 'token_sha256')
if old then redis.call('DEL', '{p}token:' .. old) end
redis.call('HSET', key, 'token_sha256', ARGV[2], 'agents', ARGV[3])
redis.call('SET', '{p}token:' .. ARGV[2], ARGV[1])
redis.call('SADD', '{p}kiosks', ARGV[1])
redis.call('SREM', '{p}revoked', ARGV[1])
return 'ok'
"""


def _script(source: str) -> str:
    return source.replace("{p}", PREFIX)


def describe_url(url: str) -> str:
    """``redis_url`` without credentials, for logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or parts.path or "?"
    return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}{parts.path if parts.hostname else ''}"


class RedisStore:
    """:class:`~kioskd.backend.store.Store` in Redis (see the module docstring)."""

    def __init__(self, config: BackendServerConfig, client: RedisClient) -> None:
        self._config = config
        self._client = client
        self._where = describe_url(config.redis_url)
        self._auth = Script(client, _script(_AUTH))
        self._bucket = Script(client, _script(_BUCKET))
        self._heartbeat = Script(client, _script(_HEARTBEAT))
        self._sign = Script(client, _script(_SIGN))
        self._admit_heartbeat = Script(client, _script(_ADMIT_HEARTBEAT))
        self._add = Script(client, _script(_ADD))

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (ReplyError, OSError, ConnectionError, trio.TooSlowError, ValueError) as exc:
            raise StoreUnavailable(f"redis at {self._where} failed ({what}: {type(exc).__name__})") from None

    async def _command(self, what: str, *words: str | int) -> Reply:
        return await self._call(what, lambda: self._client.call(*words))

    def _entry(self, toml: KioskEntry | None, digest: str, reply: Reply) -> KioskEntry:
        """The kiosk a script found: the TOML entry, or the registered one it read."""
        if toml is not None:
            return toml
        kiosk_id, agents = _strings(reply)[:2]
        return KioskEntry(id=kiosk_id, token_sha256=digest, agents=_agents(agents))

    async def kiosk_for_token(self, token_sha256: str) -> KioskEntry | None:
        """A TOML kiosk (checked here) or a registered one (in Redis), unless revoked."""
        digest = token_sha256.lower()
        toml = find_toml_kiosk(self._config.kiosk, digest)
        reply = await self._call("auth", lambda: self._auth(args=[digest, toml.id if toml else ""]))
        return self._entry(toml, digest, reply) if reply else None

    async def _charge(self, kiosk_id: str, op: str) -> float:
        args: list[Word] = [kiosk_id, repr(self._rate()), self._config.burst, op]
        return float(_text(await self._call(op, lambda: self._bucket(args=args))))

    def _rate(self) -> float:
        return self._config.rate_per_minute / SECONDS_PER_MINUTE

    async def take(self, kiosk_id: str) -> float:
        """Charge one signed URL: 0.0 if charged, else seconds until one is available."""
        return await self._charge(kiosk_id, "take")

    async def refund(self, kiosk_id: str) -> None:
        """Give back one charge; never above the burst."""
        await self._charge(kiosk_id, "refund")

    async def record_heartbeat(self, kiosk_id: str, status: dict[str, Any]) -> float:
        """Keep ``status`` as this kiosk's latest; returns Redis's time of it."""
        args: list[Word] = [kiosk_id, _json(status)]
        return float(_text(await self._call("heartbeat", lambda: self._heartbeat(args=args))))

    async def admit_signed_url(self, token_sha256: str, agent_id: str) -> Admission | None:
        """Look-up, agent check and charge in one script (one round trip)."""
        digest = token_sha256.lower()
        toml = find_toml_kiosk(self._config.kiosk, digest)
        allowed = "1" if toml is not None and agent_id in toml.agents else "0"
        args: list[Word] = [digest, toml.id if toml else "", allowed, agent_id, repr(self._rate()), self._config.burst]
        reply = await self._call("sign", lambda: self._sign(args=args))
        if not reply:
            return None
        outcome = _strings(reply)[2]
        if outcome == "forbidden":
            return Admission(self._entry(toml, digest, reply), allowed=False)
        return Admission(self._entry(toml, digest, reply), wait=float(outcome))

    async def admit_heartbeat(self, token_sha256: str, status: dict[str, Any]) -> tuple[KioskEntry, float] | None:
        """Look-up and record in one script (one round trip)."""
        digest = token_sha256.lower()
        toml = find_toml_kiosk(self._config.kiosk, digest)
        args: list[Word] = [digest, toml.id if toml else "", _json(status)]
        reply = await self._call("heartbeat", lambda: self._admit_heartbeat(args=args))
        return (self._entry(toml, digest, reply), float(_strings(reply)[2])) if reply else None

    async def heartbeats(self) -> list[Heartbeat]:
        """The latest heartbeat of every kiosk that ever sent one."""
        flat = _strings(await self._command("fleet", "ZRANGE", f"{PREFIX}seen", 0, -1, "WITHSCORES"))
        pairs = [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]
        out: list[Heartbeat] = []
        for start in range(0, len(pairs), BATCH):
            batch = pairs[start : start + BATCH]
            bodies = await self._command("fleet", "MGET", *[f"{PREFIX}hb:{kiosk_id}" for kiosk_id, _ in batch])
            assert isinstance(bodies, list)
            for (kiosk_id, last_seen), body in zip(batch, bodies, strict=True):
                if isinstance(body, bytes):
                    out.append(Heartbeat(kiosk_id, msgspec.json.decode(body), last_seen))
        return out

    async def kiosks(self) -> list[KioskRecord]:
        """The TOML list, then the registry, with revocations from Redis."""
        revoked = set(_strings(await self._command("registry", "SMEMBERS", f"{PREFIX}revoked")))
        ids = sorted(_strings(await self._command("registry", "SMEMBERS", f"{PREFIX}kiosks")))
        out = [KioskRecord(e, "toml", e.id in revoked) for e in self._config.kiosk]
        for start in range(0, len(ids), BATCH):
            batch = ids[start : start + BATCH]
            commands = [("HMGET", f"{PREFIX}kiosk:{kiosk_id}", "token_sha256", "agents") for kiosk_id in batch]

            async def fields(commands: list[tuple[str, str, str, str]] = commands) -> list[list[str]]:
                replies = await self._client.pipeline(commands)
                return [[_text(v) if v is not None else "" for v in _array(r)] for r in replies]

            for kiosk_id, (sha, agents) in zip(batch, await self._call("registry", fields), strict=True):
                entry = KioskEntry(id=kiosk_id, token_sha256=sha, agents=_agents(agents))
                out.append(KioskRecord(entry, "registry", kiosk_id in revoked))
        return out

    async def add_kiosk(self, entry: KioskEntry) -> None:
        """Register a kiosk in Redis. Raises ValueError if its id or token is taken."""
        check_new_kiosk(entry, [KioskRecord(e, "toml") for e in self._config.kiosk])  # the registry: in the script
        digest = entry.token_sha256.lower()
        args = [entry.id, digest, json.dumps(entry.agents)]
        reply = _text(await self._call("registry", lambda: self._add(args=args)))
        if reply == "id":
            raise ValueError(f"a kiosk with id {entry.id!r} already exists (registry)")
        if reply == "token":
            raise ValueError("another kiosk already has that token")

    async def revoke(self, kiosk_id: str) -> bool:
        """Add the id to the revoked set every replica checks on each request; False if unknown."""
        if not any(r.entry.id == kiosk_id for r in await self.kiosks()):
            return False
        await self._command("registry", "SADD", f"{PREFIX}revoked", kiosk_id)
        return True


def _json(status: dict[str, Any]) -> bytes:
    return msgspec.json.encode(status)


def _text(reply: Reply) -> str:
    """A bulk or status reply as text (a script's string result arrives as bulk bytes)."""
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, str | int):
        return str(reply)
    raise ValueError(f"unexpected redis reply {type(reply).__name__}")


def _array(reply: Reply) -> list[Reply]:
    """An array reply (an error reply inside a pipeline is raised here)."""
    if isinstance(reply, ReplyError):
        raise reply
    if not isinstance(reply, list):
        raise ValueError(f"unexpected redis reply {type(reply).__name__}")
    return reply


def _strings(reply: Reply) -> list[str]:
    """An array reply as text."""
    return [_text(item) for item in _array(reply)]


def _agents(text: str) -> list[str]:
    try:
        agents = msgspec.json.decode(text) if text else []
    except ValueError:
        return []
    return [a for a in agents if isinstance(a, str)] if isinstance(agents, list) else []


@asynccontextmanager
async def open_redis_store(config: BackendServerConfig) -> AsyncIterator[Store]:
    """A :class:`RedisStore` for ``config.redis_url``; Redis need not be up yet (calls fail closed until it is)."""
    client = RedisClient(parse_endpoint(config.redis_url), REDIS_TIMEOUT)
    try:
        yield RedisStore(config, client)
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()

"""A small Redis client for Trio: RESP2 over a pool of Trio sockets, Lua scripts by SHA.

Just what :mod:`kioskd.backend.redis_store` needs: ``call(*words)`` and
:class:`Script` (``EVALSHA``, falling back to ``EVAL`` once Redis has forgotten it).
Why not coredis: it runs under Trio (through anyio), but it cost about 1.9 ms of CPU
per command here, against well under 0.1 ms for this; the backend makes two or three
commands per request. Every call has a deadline; a connection that failed, timed out
or was cancelled mid-reply is closed, never reused, so a late reply cannot be read as
the answer to the next command.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union
from urllib.parse import parse_qs, unquote, urlsplit

import trio

__all__ = ["RedisClient", "RedisEndpoint", "ReplyError", "Script", "encode_command", "parse_endpoint"]

Reply = Union[None, int, bytes, str, "ReplyError", list["Reply"]]
Word = str | bytes | int | float

#: Connections kept open for reuse, at most.
MAX_IDLE = 16
#: Connections open at once, at most (further calls wait for one).
MAX_OPEN = 64
READ_SIZE = 65536


class ReplyError(Exception):
    """Redis answered with an error (``-ERR …``, ``-NOSCRIPT …``)."""


@dataclass(frozen=True)
class RedisEndpoint:
    """Where Redis is and how to log in, from ``redis_url``."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str = ""  # a unix socket instead of host:port
    db: int = 0
    username: str = ""
    password: str = ""
    tls: bool = False


def parse_endpoint(url: str) -> RedisEndpoint:
    """``redis://[user:pass@]host[:port][/db]``, ``rediss://…`` (TLS) or ``unix:///path[?db=N]``. Raises ValueError."""
    parts = urlsplit(url)
    username, password = unquote(parts.username or ""), unquote(parts.password or "")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// redis_url needs a socket path")
        db = int(parse_qs(parts.query).get("db", ["0"])[0])
        return RedisEndpoint(path=parts.path, db=db, username=username, password=password)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"redis_url must start with redis://, rediss:// or unix://, got {parts.scheme!r}")
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise ValueError(f"the database in redis_url must be a number, got {db_text!r}")
    return RedisEndpoint(
        host=parts.hostname or "127.0.0.1", port=parts.port or 6379, db=int(db_text),
        username=username, password=password, tls=parts.scheme == "rediss",
    )


def _word(word: Word) -> bytes:
    if isinstance(word, bytes):
        return word
    if isinstance(word, float):
        return repr(word).encode()
    return str(word).encode()


def encode_command(words: Sequence[Word]) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(words)]
    for word in words:
        data = _word(word)
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _simple(kind: int, text: bytes) -> Reply:
    if kind == ord("+"):
        return text.decode()
    if kind == ord("-"):
        return ReplyError(text.decode(errors="replace"))
    if kind == ord(":"):
        return int(text)
    raise ConnectionError(f"not a RESP reply: {bytes([kind]) + text[:40]!r}")


class _Reader:
    """Parses RESP2 replies from a byte stream, resuming where it stopped as more bytes arrive.

    What is parsed stays parsed (the arrays still open are on a stack), so a long reply
    costs one pass however many reads it takes.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._pos = 0
        self._open: list[tuple[list[Reply], int]] = []  # arrays being filled: items so far, length

    def _parse(self) -> tuple[bool, Reply]:
        """(True, reply) once a whole reply is in; (False, None) if more bytes are needed."""
        buf = self._buffer
        while True:
            end = buf.find(b"\r\n", self._pos)
            if end < 0:
                return False, None
            kind, text = buf[self._pos], bytes(buf[self._pos + 1 : end])
            value: Reply
            if kind == ord("$"):
                n = int(text)
                if n >= 0 and len(buf) < end + 4 + n:
                    return False, None
                value, self._pos = (None, end + 2) if n < 0 else (bytes(buf[end + 2 : end + 2 + n]), end + 4 + n)
            elif kind == ord("*"):
                n = int(text)
                self._pos = end + 2
                if n > 0:
                    self._open.append(([], n))
                    continue
                value = None if n < 0 else []
            else:
                value, self._pos = _simple(kind, text), end + 2
            while self._open:  # hand the value to the array it belongs to, closing the full ones
                items, n = self._open[-1]
                items.append(value)
                if len(items) < n:
                    break
                self._open.pop()
                value = items
            else:
                del buf[: self._pos]
                self._pos = 0
                return True, value

    async def reply(self) -> Reply:
        """The next reply: str (status), int, bytes, None, ReplyError (not raised) or a list of those."""
        while True:
            done, reply = self._parse()
            if done:
                return reply
            data = await self._stream.receive_some(READ_SIZE)
            if not data:
                raise ConnectionError("redis closed the connection")
            self._buffer += data


class _Connection:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.reader = _Reader(stream)

    async def call(self, words: Sequence[Word]) -> Reply:
        await self.stream.send_all(encode_command(words))
        return await self.reader.reply()

    async def pipeline(self, commands: Sequence[Sequence[Word]]) -> list[Reply]:
        await self.stream.send_all(b"".join(encode_command(words) for words in commands))
        return [await self.reader.reply() for _ in commands]


class RedisClient:
    """A pool of RESP connections to one Redis; connects lazily, reconnects on the next call."""

    def __init__(self, endpoint: RedisEndpoint, timeout: float) -> None:
        self._endpoint = endpoint
        self._timeout = timeout
        self._idle: list[_Connection] = []
        self._limit = trio.CapacityLimiter(MAX_OPEN)

    async def _connect(self) -> _Connection:
        ep = self._endpoint
        stream: trio.abc.Stream
        if ep.path:
            stream = await trio.open_unix_socket(ep.path)
        else:
            stream = await trio.open_tcp_stream(ep.host, ep.port)
            if ep.tls:
                tls = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=ep.host)
                await tls.do_handshake()
                stream = tls
        conn = _Connection(stream)
        if ep.password:
            login: list[Word] = ["AUTH", ep.username, ep.password] if ep.username else ["AUTH", ep.password]
            _check(await conn.call(login))
        if ep.db:
            _check(await conn.call(["SELECT", ep.db]))
        return conn

    async def call(self, *words: Word) -> Reply:
        """One command; raises ReplyError for an error reply, OSError/ConnectionError/trio.TooSlowError otherwise."""
        (reply,) = await self._exchange([words])
        return _check(reply)

    async def pipeline(self, commands: Sequence[Sequence[Word]]) -> list[Reply]:
        """Several commands in one round trip; error replies are returned in place, not raised."""
        return await self._exchange(commands) if commands else []

    async def _exchange(self, commands: Sequence[Sequence[Word]]) -> list[Reply]:
        async with self._limit:
            with trio.fail_after(self._timeout):
                conn = self._idle.pop() if self._idle else await self._connect()
                ok = False
                try:
                    replies = await conn.pipeline(commands)
                    ok = True
                finally:
                    if ok and len(self._idle) < MAX_IDLE:
                        self._idle.append(conn)
                    else:
                        await trio.aclose_forcefully(conn.stream)
        return replies

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)


def _check(reply: Reply) -> Reply:
    if isinstance(reply, ReplyError):
        raise reply
    return reply


class Script:
    """A Lua script run by its SHA-1 (``EVALSHA``), sent in full only when Redis does not have it."""

    def __init__(self, client: RedisClient, source: str) -> None:
        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Word] = (), args: Sequence[Word] = ()) -> Reply:
        """Run it with ``KEYS`` and ``ARGV``."""
        try:
            return await self._client.call("EVALSHA", self._sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self._client.call("EVAL", self._source, len(keys), *keys, *args)

"""A lean keep-alive HTTP/1.1 client for the ElevenLabs API: h11 over a pool of Trio sockets.

Why not httpx: through anyio and httpcore it cost about 1 ms of CPU per signed URL here,
half of the backend's whole request; this is a GET and a small JSON reply. One origin
(``api_base``), ``https://`` through :class:`trio.SSLStream` (certificates checked),
``http://`` for a local simulator. A connection goes back to the pool only after a
complete exchange both sides agree can continue; one that failed, was cancelled
mid-way, or was left with an unread body is closed. An idle connection the server has
closed meanwhile is noticed before reuse (it is readable), and a request that fails on
a reused connection before any reply byte is tried once more on a fresh one.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio

__all__ = ["MAX_IDLE", "Origin", "Reply", "TooLarge", "UpstreamPool"]

#: Connections kept open for reuse, at most.
MAX_IDLE = 32
READ_SIZE = 65536


class TooLarge(Exception):
    """The reply's body passed the caller's limit (nothing more was read)."""


@dataclass(frozen=True)
class Reply:
    """A complete reply: status, headers (lower-case names, last value wins) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Origin:
    """Where the API is: scheme, host, port, the ``Host`` header and the base path."""

    tls: bool
    host: str
    port: int
    authority: str
    path: str

    @classmethod
    def parse(cls, base: str) -> Origin:
        """``http(s)://host[:port][/path]``; raises ValueError for anything else."""
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"api_base must be http(s)://host[:port][/path], got {base!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        authority = shown if port == (443 if tls else 80) else f"{shown}:{port}"
        return cls(tls, host, port, authority, parts.path.rstrip("/"))


class _Connection:
    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType) -> None:
        self.stream = stream
        self.socket = socket
        self.h11 = h11.Connection(h11.CLIENT)
        #: the current request's reply has begun (after that, a failure is not retried)
        self.replied = False

    async def receive(self) -> None:
        self.h11.receive_data(bytes(await self.stream.receive_some(READ_SIZE)))

    async def next_event(self) -> h11.Event:
        event = self.h11.next_event()
        while event is h11.NEED_DATA:
            await self.receive()
            event = self.h11.next_event()
        if event is h11.PAUSED:
            raise h11.RemoteProtocolError("the API sent more than one reply")
        assert isinstance(event, h11.Event)
        return event

    @property
    def reusable(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE


class UpstreamPool:
    """GET requests to one origin over reused connections (see the module docstring)."""

    def __init__(self, base: str, *, max_idle: int = MAX_IDLE, tls: ssl.SSLContext | None = None) -> None:
        self.origin = Origin.parse(base)
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._tls = (tls or ssl.create_default_context()) if self.origin.tls else None
        #: connections opened so far (the tests check reuse with it)
        self.opened = 0

    async def _connect(self) -> _Connection:
        tcp = await trio.open_tcp_stream(self.origin.host, self.origin.port)
        self.opened += 1
        if self._tls is None:
            return _Connection(tcp, tcp.socket)
        tls = trio.SSLStream(tcp, self._tls, server_hostname=self.origin.host, https_compatible=True)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return _Connection(tls, tcp.socket)

    async def _idle_connection(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.socket.is_readable():  # readable while idle: closed by the server (or garbage)
                return conn
            await trio.aclose_forcefully(conn.stream)
        return None

    async def get(self, path: str, headers: list[tuple[str, str]], limit: int) -> Reply:
        """``GET base path + path``; raises TooLarge past ``limit`` body bytes, OSError,
        trio.BrokenResourceError or h11.ProtocolError when the exchange fails."""
        target = self.origin.path + path
        conn = await self._idle_connection()
        if conn is not None:
            try:
                return await self._exchange(conn, target, headers, limit)
            except (OSError, trio.BrokenResourceError, h11.RemoteProtocolError):
                if conn.replied:
                    raise
        return await self._exchange(await self._connect(), target, headers, limit)

    async def _exchange(self, conn: _Connection, target: str, headers: list[tuple[str, str]], limit: int) -> Reply:
        ok = False
        try:
            reply = await self._request(conn, target, headers, limit)
            ok = True
        finally:
            if ok and conn.reusable and len(self._idle) < self._max_idle:
                conn.h11.start_next_cycle()
                self._idle.append(conn)
            else:
                await trio.aclose_forcefully(conn.stream)
        return reply

    async def _request(self, conn: _Connection, target: str, headers: list[tuple[str, str]], limit: int) -> Reply:
        request = h11.Request(method="GET", target=target, headers=[("Host", self.origin.authority), *headers])
        conn.replied = False
        await conn.stream.send_all(conn.h11.send(request) + (conn.h11.send(h11.EndOfMessage()) or b""))
        event = await conn.next_event()
        conn.replied = True
        while isinstance(event, h11.InformationalResponse):
            event = await conn.next_event()
        if not isinstance(event, h11.Response):
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} instead of a reply")
        fields = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers}
        if event.status_code != 200:  # the caller needs only status and headers: the body is left unread
            return Reply(event.status_code, fields, b"")
        declared = fields.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise TooLarge
        body = bytearray()
        while not isinstance(event := await conn.next_event(), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > limit:
                    raise TooLarge
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("the API closed the connection mid-reply")
        return Reply(200, fields, bytes(body))

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)


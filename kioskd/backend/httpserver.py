"""A lean HTTP/1.1 server for the backend's ASGI app: h11 over Trio sockets.

Why not Hypercorn here (the screen and the simulator keep it: they need WebSockets):
per request it cost the backend ~0.5 ms of CPU and three socket writes (head, body,
end); this parses with the same h11, runs the app, and writes the whole reply with one
``send_all``. Plain HTTP only (TLS is the reverse proxy's job, see the README), keep-alive,
requests on one connection answered in order.

Limits: a request head of at most :data:`MAX_HEAD` bytes (431 past it; URL and headers); the first byte of
a request within :data:`KEEP_ALIVE_TIMEOUT` of the previous reply, the rest of its head
within :data:`HEAD_TIMEOUT` (slow clients cannot hold connections open); malformed
requests are answered 400 and the connection is closed. The app reads bodies itself (and
caps them). A request whose body the app did not read ends its connection after the reply.
Graceful stop: listeners close, requests in progress get ``graceful_timeout`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from email.utils import formatdate
from functools import partial
from typing import Any
from urllib.parse import unquote

import h11
import trio

__all__ = ["HEAD_TIMEOUT", "KEEP_ALIVE_TIMEOUT", "MAX_HEAD", "serve"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
App = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

MAX_HEAD = 64 * 1024
KEEP_ALIVE_TIMEOUT = 5.0
HEAD_TIMEOUT = 10.0
READ_SIZE = 65536
SERVER = b"kioskd"


class _Date:
    """The ``Date`` header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True).encode()
        return self._value


_date = _Date()


class _Exchange:
    """One request and its reply on a connection (the ASGI ``receive`` and ``send``)."""

    def __init__(self, conn: _Connection, request: h11.Request) -> None:
        self._conn = conn
        self._head_request = request.method == b"HEAD"
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._out = bytearray()
        self._head_sent = False
        self.started = False
        self.finished = False
        #: the request's body was malformed: answered 400 here, whatever the app does next
        self.refused = False

    async def receive(self) -> Message:
        h = self._conn.h11
        if h.their_state is not h11.SEND_BODY:  # the body is read: only a disconnect is left to report
            await self._conn.closed.wait()
            return {"type": "http.disconnect"}
        if h.client_is_waiting_for_100_continue and not self.started:
            await self._conn.write(h.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        try:
            event = await self._conn.next_event()
        except h11.RemoteProtocolError:
            if not self._head_sent:
                self.refused = True
                await _refuse(self._conn, 400)
            raise
        if isinstance(event, h11.Data):
            return {"type": "http.request", "body": bytes(event.data), "more_body": True}
        if isinstance(event, h11.EndOfMessage):
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        h = self._conn.h11
        if self.refused:
            return
        if kind == "http.response.start" and not self.started:
            self._status = int(message["status"])
            self._headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            self.started = True
            return
        if kind != "http.response.body" or not self.started or self.finished:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self._head_sent:
            self._head_sent = True
            headers = [*self._headers, (b"date", _date()), (b"server", SERVER)]
            if not self._conn.drain_buffered():  # the app did not read a body still arriving: no next request here
                headers.append((b"connection", b"close"))
            self._out += h.send(h11.Response(status_code=self._status, headers=headers)) or b""
        body = bytes(message.get("body", b""))
        if body and not self._head_request:
            self._out += h.send(h11.Data(data=body)) or b""
        if message.get("more_body", False):
            await self._flush()
            return
        self._out += h.send(h11.EndOfMessage()) or b""
        self.finished = True
        await self._flush()

    async def _flush(self) -> None:
        out, self._out = bytes(self._out), bytearray()
        if out:
            await self._conn.write(out)


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.closed = trio.Event()
        peer, local = stream.socket.getpeername(), stream.socket.getsockname()
        self.peer: tuple[str, int] = (peer[0], peer[1])
        self.local: tuple[str, int] = (local[0], local[1])

    async def write(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_event(self) -> h11.Event:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(READ_SIZE)
                self.h11.receive_data(bytes(data))
                continue
            if event is h11.PAUSED:
                raise h11.RemoteProtocolError("a request before the previous reply was complete")
            assert isinstance(event, h11.Event)
            return event

    def drain_buffered(self) -> bool:
        """Skip the rest of the request (what the app left unread) if it is all here; True if it was."""
        while self.h11.their_state is h11.SEND_BODY:
            event = self.h11.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return False
        return self.h11.their_state is h11.DONE

    async def next_request(self) -> h11.Request | None:
        """The next request head, or None (closed, idle too long, or a head too slow to arrive)."""
        event = self.h11.next_event()  # a pipelined request may be buffered already
        if event is h11.NEED_DATA:
            with trio.move_on_after(KEEP_ALIVE_TIMEOUT) as idle:
                data = await self.stream.receive_some(READ_SIZE)
            if idle.cancelled_caught:
                return None
            self.h11.receive_data(bytes(data))
            with trio.move_on_after(HEAD_TIMEOUT):
                event = await self.next_event()
        if not isinstance(event, h11.Request):
            return None
        if len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers) > MAX_HEAD:
            raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        return event


def _scope(request: h11.Request, conn: _Connection) -> Scope:
    target = request.target.decode("latin-1")
    path, _, query = target.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": request.http_version.decode(),
        "method": request.method.decode(),
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [(name, value) for name, value in request.headers],
        "client": conn.peer,
        "server": conn.local,
    }


_REASONS = {400: b"Bad Request", 431: b"Request Header Fields Too Large", 500: b"Internal Server Error"}


async def _refuse(conn: _Connection, status: int) -> None:
    """A plain reply to a request we could not parse or serve; the connection closes after it."""
    text = _REASONS[status]
    head = b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n" % (
        status, text, len(text),
    )
    try:
        await conn.write(head + b"date: %s\r\nserver: %s\r\n\r\n%s" % (_date(), SERVER, text))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


class _Server:
    def __init__(self, app: App) -> None:
        self._app = app
        self.busy = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = _Connection(stream)
        try:
            await self._serve(conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            conn.closed.set()
            await trio.aclose_forcefully(stream)

    async def _serve(self, conn: _Connection) -> None:
        while True:
            try:
                request = await conn.next_request()
            except h11.RemoteProtocolError as exc:
                await _refuse(conn, exc.error_status_hint if exc.error_status_hint in (400, 431) else 400)
                return
            if request is None:
                return
            exchange = _Exchange(conn, request)
            self.busy += 1
            try:
                await self._app(_scope(request, conn), exchange.receive, exchange.send)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            except Exception:
                if exchange.refused:
                    return
                log.exception("request failed")
                if not exchange.started:
                    await _refuse(conn, 500)
                return
            finally:
                self.busy -= 1
            if not exchange.finished or conn.h11.our_state is not h11.DONE or conn.h11.their_state is not h11.DONE:
                return
            conn.h11.start_next_cycle()


async def serve(
    app: App,
    host: str,
    port: int,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    graceful_timeout: float = 5.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until ``shutdown_trigger`` returns (or cancelled); started: the URLs."""
    server = _Server(app)
    listeners = await trio.open_tcp_listeners(port, host=host)
    urls = []
    for listener in listeners:
        bound_host, bound_port = listener.socket.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        urls.append(f"http://{shown}:{bound_port}")
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            accepting.start_soon(partial(trio.serve_listeners, server.handle, listeners, handler_nursery=connections))
            task_status.started(urls)
            await (shutdown_trigger or trio.sleep_forever)()
            accepting.cancel_scope.cancel()
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        with trio.move_on_after(graceful_timeout):
            while server.busy:
                await trio.sleep(0.01)
        connections.cancel_scope.cancel()

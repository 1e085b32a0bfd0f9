"""The backend's HTTP/1.1 server on a real socket: keep-alive, one write per reply, limits, graceful stop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kioskd.backend import httpserver

IO_TIMEOUT = 10


class Recorder:
    """A Starlette app that answers ``/echo`` (the body back, its length) and ``/slow`` (after a while)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, tuple[str, int] | None]] = []
        self.slow = trio.Event()

    async def echo(self, request: Request) -> Response:
        body = await request.body()
        self.seen.append((request.method, request.url.path + "?" + request.url.query, (request.client.host, 0)
                          if request.client else None))
        return JSONResponse({"n": len(body), "q": request.query_params.get("q", "")})

    async def ignore_body(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def slow_reply(self, request: Request) -> Response:
        self.slow.set()
        await trio.sleep(1.0)
        return JSONResponse({"slow": True})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/echo", self.echo, methods=["GET", "POST"]),
            Route("/ignore", self.ignore_body, methods=["POST"]),
            Route("/slow", self.slow_reply),
        ])


@asynccontextmanager
async def running(app: Starlette, stop: trio.Event | None = None) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        trigger = stop.wait if stop is not None else None
        (url,) = await nursery.start(partial(httpserver.serve, app, "127.0.0.1", 0, shutdown_trigger=trigger))
        yield int(url.rsplit(":", 1)[1])
        nursery.cancel_scope.cancel()


class Client:
    """Raw bytes over one connection; counts the reads that brought reply bytes."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def reply(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            await self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("closed")
        self.buffer += data

    async def closed(self) -> bool:
        return await self.stream.receive_some(1) == b""


async def connect(port: int) -> Client:
    return Client(await trio.open_tcp_stream("127.0.0.1", port))


async def test_many_requests_on_one_connection_each_reply_in_one_write() -> None:
    recorder = Recorder()
    with trio.fail_after(IO_TIMEOUT):
        async with running(recorder.app()) as port:
            client = await connect(port)
            replies = []
            for i in range(20):
                await client.stream.send_all(
                    b"GET /echo?q=%d HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % i
                )
                first = await client.stream.receive_some(65536)  # the whole reply arrives in one segment
                client.buffer = first
                replies.append(await client.reply())
    assert [r[0] for r in replies] == [200] * 20
    assert [r[2] for r in replies] == [b'{"n":0,"q":"%d"}' % i for i in range(20)]
    assert all("close" not in r[1].get("connection", "") and r[1]["date"] for r in replies)
    assert recorder.seen[0] == ("GET", "/echo?q=0", ("127.0.0.1", 0))


async def test_pipelined_requests_are_answered_in_order() -> None:
    with trio.fail_after(IO_TIMEOUT):
        async with running(Recorder().app()) as port:
            client = await connect(port)
            await client.stream.send_all(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                b"POST /echo?q=2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
                b"GET /echo?q=3 HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            replies = [await client.reply() for _ in range(3)]
    assert [body for _, _, body in replies] == [b'{"n":3,"q":""}', b'{"n":2,"q":"2"}', b'{"n":0,"q":"3"}']


async def test_a_body_the_app_left_unread_ends_the_connection_after_the_reply() -> None:
    with trio.fail_after(IO_TIMEOUT):
        async with running(Recorder().app()) as port:
            client = await connect(port)
            await client.stream.send_all(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            status, headers, _ = await client.reply()
            assert await client.closed()
            whole = await connect(port)  # a body that is all here already is skipped: the connection stays
            await whole.stream.send_all(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            kept = await whole.reply()
            await whole.stream.send_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            after = await whole.reply()
    assert status == 200 and headers["connection"] == "close"
    assert "connection" not in kept[1] and after[0] == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ],
    ids=["garbage", "no-host", "huge-head", "bad-chunk"],
)
async def test_malformed_requests_get_a_status_and_the_connection_closes(request_bytes: bytes, status: int) -> None:
    with trio.fail_after(IO_TIMEOUT):
        async with running(Recorder().app()) as port:
            client = await connect(port)
            await client.stream.send_all(request_bytes)
            got, headers, _ = await client.reply()
            assert await client.closed()
    assert got == status and headers["connection"] == "close"


async def test_idle_and_slow_connections_are_closed(virtual_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(IO_TIMEOUT * 10):
        async with running(Recorder().app()) as port:
            idle = await connect(port)
            started = trio.current_time()
            assert await idle.closed()
            idle_for = trio.current_time() - started
            slow = await connect(port)
            await slow.stream.send_all(b"GET /echo HTTP/1.1\r\nHo")
            started = trio.current_time()
            assert await slow.closed()
            slow_for = trio.current_time() - started
    assert idle_for == pytest.approx(httpserver.KEEP_ALIVE_TIMEOUT, abs=0.01)
    assert slow_for == pytest.approx(httpserver.HEAD_TIMEOUT, abs=0.01)


async def test_graceful_stop_finishes_the_request_in_progress(virtual_clock: trio.testing.MockClock) -> None:
    recorder, stop = Recorder(), trio.Event()
    with trio.fail_after(IO_TIMEOUT * 10):
        async with running(recorder.app(), stop) as port:
            client = await connect(port)
            idle = await connect(port)
            await client.stream.send_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            await recorder.slow.wait()
            stop.set()
            status, _, body = await client.reply()
            assert await idle.closed()
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", port)
    assert status == 200 and body == b'{"slow":true}'


@pytest.fixture
def virtual_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.01)

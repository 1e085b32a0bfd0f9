"""The backend's keep-alive client for the ElevenLabs API, against real servers on 127.0.0.1."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import h11
import pytest
import trio

from kioskd.backend.upstream import Origin, TooLarge, UpstreamPool

IO_TIMEOUT = 10
BODY = b'{"signed_url": "wss://127.0.0.1/x"}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
Handler = Callable[[trio.SocketStream, int], Awaitable[None]]


async def read_request(stream: trio.SocketStream) -> bytes:
    """One request head (these are GETs: no body); b"" at EOF."""
    head = b""
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(4096)
        if not data:
            return b""
        head += data
    return head


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server on 127.0.0.1; ``handler(stream, n)`` serves the n-th connection. Yields (base, accepted)."""
    accepted: list[int] = []

    async def handle(stream: trio.SocketStream) -> None:
        accepted.append(len(accepted))
        try:
            await handler(stream, accepted[-1])
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield f"http://127.0.0.1:{listener.socket.getsockname()[1]}", accepted
        nursery.cancel_scope.cancel()


async def keep_alive(stream: trio.SocketStream, n: int) -> None:
    while await read_request(stream):
        await stream.send_all(OK)


def test_origin_parses_the_base_url() -> None:
    assert Origin.parse("https://api.elevenlabs.io") == Origin(True, "api.elevenlabs.io", 443, "api.elevenlabs.io", "")
    assert Origin.parse("http://[::1]:8080/base/") == Origin(False, "::1", 8080, "[::1]:8080", "/base")
    with pytest.raises(ValueError, match="api_base"):
        Origin.parse("ftp://x")


async def test_connections_are_reused() -> None:
    with trio.fail_after(IO_TIMEOUT):
        async with raw_server(keep_alive) as (base, accepted):
            pool = UpstreamPool(base)
            replies = [await pool.get("/p", [], 1024) for _ in range(5)]
            await pool.aclose()
    assert [(r.status, r.body) for r in replies] == [(200, BODY)] * 5
    assert pool.opened == 1 and accepted == [0]


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def one_then_close(stream: trio.SocketStream, n: int) -> None:
        await read_request(stream)
        await stream.send_all(OK)
        await stream.aclose()

    with trio.fail_after(IO_TIMEOUT):
        async with raw_server(one_then_close) as (base, _):
            pool = UpstreamPool(base)
            first = await pool.get("/p", [], 1024)
            await trio.sleep(0.05)  # the close reaches us while the connection is idle
            second = await pool.get("/p", [], 1024)
    assert first.status == second.status == 200 and pool.opened == 2


async def test_a_reused_connection_dropped_before_the_reply_is_retried_once() -> None:
    async def drop_the_second_request(stream: trio.SocketStream, n: int) -> None:
        await read_request(stream)
        await stream.send_all(OK)
        if n == 0:
            await read_request(stream)  # read it, then hang up without a word
            await stream.aclose()
            return
        await keep_alive(stream, n)

    with trio.fail_after(IO_TIMEOUT):
        async with raw_server(drop_the_second_request) as (base, accepted):
            pool = UpstreamPool(base)
            await pool.get("/p", [], 1024)
            retried = await pool.get("/p", [], 1024)
    assert retried.status == 200 and len(accepted) == 2


async def test_a_fresh_connection_that_fails_is_not_retried() -> None:
    async def hang_up(stream: trio.SocketStream, n: int) -> None:
        await read_request(stream)
        await stream.aclose()

    with trio.fail_after(IO_TIMEOUT):
        async with raw_server(hang_up) as (base, accepted):
            pool = UpstreamPool(base)
            with pytest.raises(h11.RemoteProtocolError):
                await pool.get("/p", [], 1024)
    assert len(accepted) == 1


async def test_a_cut_or_oversized_or_unread_reply_is_never_reused() -> None:
    async def serve(stream: trio.SocketStream, n: int) -> None:
        while head := await read_request(stream):
            if b"/big" in head:
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
            elif b"/chunked" in head:
                chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                await stream.send_all(chunked + b"800\r\n" + b"y" * 2048)
            elif b"/500" in head:
                await stream.send_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\noops")
            else:
                await stream.send_all(OK)

    with trio.fail_after(IO_TIMEOUT):
        async with raw_server(serve) as (base, accepted):
            pool = UpstreamPool(base)
            with pytest.raises(TooLarge):
                await pool.get("/big", [], 1024)  # declared too large
            with pytest.raises(TooLarge):
                await pool.get("/chunked", [], 1024)  # found too large while reading
            failed = await pool.get("/500", [], 1024)
            ok = await pool.get("/p", [], 1024)
            reused = await pool.get("/p", [], 1024)
    assert failed.status == 500 and ok.status == reused.status == 200
    assert pool.opened == 4 and len(accepted) == 4  # a fresh one after each of the three, then reuse


async def test_a_cancelled_request_closes_its_connection() -> None:
    async def slow_second(stream: trio.SocketStream, n: int) -> None:
        await read_request(stream)
        await stream.send_all(OK)
        await read_request(stream)
        await trio.sleep(0.5)
        await stream.send_all(OK)  # a late reply nobody may read as the next one's
        await keep_alive(stream, n)

    with trio.fail_after(IO_TIMEOUT):
        async with raw_server(slow_second) as (base, accepted):
            pool = UpstreamPool(base)
            await pool.get("/p", [], 1024)
            with trio.move_on_after(0.1):
                await pool.get("/p", [], 1024)
            after = await pool.get("/p", [], 1024)
    assert after.status == 200 and pool.opened == 2 and len(accepted) == 2


async def test_https_checks_the_certificate(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def tls_keep_alive(stream: trio.SocketStream, n: int) -> None:
        tls = trio.SSLStream(stream, server_context, server_side=True, https_compatible=True)
        head = b""
        try:
            while True:
                data = await tls.receive_some(4096)
                if not data:
                    return
                head += data
                while b"\r\n\r\n" in head:
                    head = head[head.index(b"\r\n\r\n") + 4 :]
                    await tls.send_all(OK)
        except (trio.BrokenResourceError, ssl.SSLError):
            return

    with trio.fail_after(IO_TIMEOUT):
        async with raw_server(tls_keep_alive) as (base, _):
            https = base.replace("http://", "https://")
            untrusting = UpstreamPool(https)
            with pytest.raises(trio.BrokenResourceError) as refused:
                await untrusting.get("/p", [], 1024)
            assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
            trusting = UpstreamPool(https, tls=ssl.create_default_context(cafile=str(cert)))
            replies = [await trusting.get("/p", [], 1024) for _ in range(3)]
            await trusting.aclose()
    assert [r.body for r in replies] == [BODY] * 3 and trusting.opened == 1

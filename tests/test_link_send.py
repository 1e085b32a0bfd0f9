"""``Link.send_text``: the microphone's send path, on a real WebSocket over loopback TCP.

A real trio-websocket server on 127.0.0.1 receives; the kiosk side is :func:`open_link`.
What must hold: every message arrives whole and in order, also when the kernel takes
only part of a frame (a peer that stops reading) and while pings are answered in
between; on a plain socket the send is no scheduling point (another task gets no turn);
once the connection is closed it raises ConnectionClosed like ``send_message``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio_websocket

from kioskd.service import link as link_mod
from kioskd.service.link import Link, open_link


@asynccontextmanager
async def served(
    nursery: trio.Nursery, *, read: trio.Event | None = None
) -> AsyncIterator[tuple[Link, list[str], trio.Event]]:
    """A server that records what it receives (after ``read`` is set, if given); the kiosk's link to it."""
    got: list[str] = []
    closed = trio.Event()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        if read is not None:
            await read.wait()
        try:
            while True:
                got.append(str(await ws.get_message()))
        except trio_websocket.ConnectionClosed:
            closed.set()

    server = await nursery.start(
        lambda task_status: trio_websocket.serve_websocket(
            handler, "127.0.0.1", 0, None, handler_nursery=nursery, task_status=task_status
        )
    )
    port = server.port
    link = await open_link(f"ws://127.0.0.1:{port}/x", nursery, max_message_bytes=2**24)
    try:
        yield link, got, closed
    finally:
        await link.ws.aclose()


async def wait_for(got: list[str], n: int) -> None:
    while len(got) < n:
        await trio.sleep(0.005)


async def other_task_turns(send: object, messages: list[str]) -> int:
    """How many turns a busy task got while ``send`` sent ``messages`` one after the other."""
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(0.01)  # the ticker is running
        before = turns
        for m in messages:
            await send(m)  # type: ignore[operator]
        during = turns - before
        nursery.cancel_scope.cancel()
    return during


async def test_plain_socket_sends_without_a_scheduling_point_and_in_order() -> None:
    messages = [f'{{"user_audio_chunk": "{i:04d}{"A" * 850}"}}' for i in range(20)]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            async with served(nursery) as (link, got, _):
                assert link.plain
                assert await other_task_turns(link.send_text, messages) == 0
                assert link.fast_sends == len(messages)
                # the check can fail: trio-websocket's own send lets the ticker run
                assert await other_task_turns(link.ws.send_message, messages) > 0
                await wait_for(got, 2 * len(messages))
                assert got == messages + messages
            nursery.cancel_scope.cancel()


async def test_part_of_a_frame_the_kernel_did_not_take_is_sent_before_anything_else() -> None:
    """The peer reads nothing at first, so a 1 MB message fits only in part; then a ping
    (the reader's pong path takes the same lock) and more messages: all arrive whole."""
    big = "B" * 1_000_000
    read = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with served(nursery, read=read) as (link, got, _):
                assert link.socket is not None
                link.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                async with trio.open_nursery() as senders:
                    senders.start_soon(link.send_text, big)
                    await trio.sleep(0.2)  # the rest waits for the peer
                    assert not got
                    senders.start_soon(link.ws.ping)
                    await trio.sleep(0.05)
                    read.set()
                await link.send_text("after")
                await wait_for(got, 2)
                assert got == [big, "after"]
                assert link.fast_sends == 1  # "after"; the big one went the slow way
            nursery.cancel_scope.cancel()


async def test_a_held_lock_takes_trio_websockets_own_path() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            async with served(nursery) as (link, got, _):
                lock = link.ws._stream_lock
                async with trio.open_nursery() as senders:
                    await lock.acquire()
                    senders.start_soon(link.send_text, "waits")
                    await trio.sleep(0.05)
                    assert not got and link.fast_sends == 0
                    lock.release()
                await wait_for(got, 1)
                assert got == ["waits"] and link.fast_sends == 0
            nursery.cancel_scope.cancel()


async def test_closed_link_raises_connection_closed() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            async with served(nursery) as (link, _, closed):
                await link.ws.aclose()
                await closed.wait()
                with pytest.raises(trio_websocket.ConnectionClosed):
                    await link.send_text("late")
            nursery.cancel_scope.cancel()


def test_write_nowait_reports_what_the_kernel_took() -> None:
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        total = 0
        while (n := link_mod._write_nowait(a.fileno(), b"x" * 65536)) > 0:
            total += n
        assert total > 0 and link_mod._write_nowait(a.fileno(), b"y") == 0
    finally:
        a.close()
        b.close()

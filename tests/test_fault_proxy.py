"""The TCP fault proxy on real loopback sockets: passthrough, drop, down, stall, delay, bandwidth."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import trio

from kioskd.simulator.proxy import FaultProxy, open_fault_proxy

TIMEOUT = 10


async def _echo(stream: trio.SocketStream) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


@pytest.fixture
async def echo_port(nursery: trio.Nursery) -> int:
    listeners = await nursery.start(trio.serve_tcp, _echo, 0)
    return int(listeners[0].socket.getsockname()[1])


@pytest.fixture
async def proxy(echo_port: int) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo_port) as p:
        yield p


async def _receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        if not data:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


async def test_passthrough_echo_counts_bytes_and_connections(proxy: FaultProxy) -> None:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        payload = bytes(range(256)) * 40
        await stream.send_all(payload)
        assert await _receive_exactly(stream, len(payload)) == payload
        assert proxy.connections == 1
        assert proxy.stats.accepted == 1
        assert proxy.stats.bytes_up == len(payload)
        assert proxy.stats.bytes_down == len(payload)
        await stream.aclose()
        while proxy.connections:
            await trio.sleep(0.01)


async def test_drop_resets_current_connections_and_new_ones_work(proxy: FaultProxy) -> None:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await stream.send_all(b"ping")
        assert await _receive_exactly(stream, 4) == b"ping"
        assert proxy.drop() == 1
        with pytest.raises((trio.BrokenResourceError, EOFError)):
            await stream.send_all(b"x")  # may still succeed into the kernel buffer…
            await _receive_exactly(stream, 1)  # …but nothing comes back: RST or EOF
        assert proxy.stats.dropped == 1
        fresh = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await fresh.send_all(b"again")
        assert await _receive_exactly(fresh, 5) == b"again"
        await fresh.aclose()


async def test_down_refuses_new_connections_until_up(proxy: FaultProxy) -> None:
    with trio.fail_after(TIMEOUT):
        proxy.down = True
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        with pytest.raises((trio.BrokenResourceError, EOFError)):
            await stream.send_all(b"hello")
            await _receive_exactly(stream, 5)
        assert proxy.stats.refused == 1
        proxy.down = False
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await stream.send_all(b"hello")
        assert await _receive_exactly(stream, 5) == b"hello"
        await stream.aclose()


async def test_stall_holds_bytes_then_resume_delivers_them_in_order(proxy: FaultProxy) -> None:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        proxy.stall = True
        for part in (b"one,", b"two,", b"three"):
            await stream.send_all(part)
        with trio.move_on_after(0.3) as waited:
            await stream.receive_some(100)
        assert waited.cancelled_caught, "bytes crossed a stalled proxy"
        assert proxy.stats.bytes_up == 0
        assert proxy.connections == 1  # still open
        proxy.stall = False
        assert await _receive_exactly(stream, 13) == b"one,two,three"
        await stream.aclose()


async def test_delay_adds_latency_each_way_and_keeps_order(proxy: FaultProxy) -> None:
    with trio.fail_after(TIMEOUT):
        proxy.delay, proxy.jitter = 0.1, 0.05
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        start = trio.current_time()
        expected = b"".join(b"%03d;" % i for i in range(50))
        for i in range(50):
            await stream.send_all(b"%03d;" % i)
        assert await _receive_exactly(stream, len(expected)) == expected
        # Two crossings, each at least delay − jitter late: a lower bound, not a speed test.
        assert trio.current_time() - start >= 2 * (0.1 - 0.05)
        await stream.aclose()


async def test_bandwidth_limit_paces_bytes(proxy: FaultProxy) -> None:
    with trio.fail_after(TIMEOUT):
        proxy.bandwidth = 20_000  # bytes/s per direction
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        payload = bytes(6000)
        start = trio.current_time()
        await stream.send_all(payload)
        await trio.sleep(0.1)
        # After 0.1 s at most ~0.1 s worth (+ one slice) can have crossed.
        assert proxy.stats.bytes_up <= 20_000 * (trio.current_time() - start) + 200 + 1
        assert await _receive_exactly(stream, len(payload)) == payload
        # The first 10 ms slice goes at once; the rest waits its turn.
        assert trio.current_time() - start >= (len(payload) - 200) / 20_000
        proxy.bandwidth = None
        await stream.send_all(b"fast")
        assert await _receive_exactly(stream, 4) == b"fast"
        await stream.aclose()


async def test_unreachable_target_closes_the_client() -> None:
    with trio.fail_after(TIMEOUT):
        # Grab a free port and release it: nothing listens there.
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        async with open_fault_proxy("127.0.0.1", port) as proxy:
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            with pytest.raises((trio.BrokenResourceError, EOFError)):
                await _receive_exactly(stream, 1)


async def test_proxy_in_front_of_the_simulator_carries_and_cuts_a_conversation() -> None:
    from trio_websocket import ConnectionClosed, open_websocket_url

    from kioskd.protocol.codec import decode_server_event
    from kioskd.protocol.server_events import ConversationInitiationMetadata
    from kioskd.simulator import SimulatorConfig, open_simulator

    with trio.fail_after(TIMEOUT):
        async with (
            open_simulator(SimulatorConfig(client_data_wait=0.1, ping_interval=0.1)) as sim,
            FaultProxy("127.0.0.1", sim.agent.port) as proxy,
        ):
            url = sim.signed_url().replace(f":{sim.agent.port}/", f":{proxy.port}/")
            async with open_websocket_url(url) as ws:
                first = decode_server_event(await ws.get_message())
                assert isinstance(first, ConversationInitiationMetadata)
                assert proxy.stats.bytes_down > 0 and proxy.stats.bytes_up > 0
                proxy.stall = True
                held = proxy.stats.bytes_down
                with trio.move_on_after(0.4):
                    while True:
                        await ws.get_message()  # drain what crossed before the stall
                assert proxy.stats.bytes_down == held  # pings pile up at the proxy
                assert sim.conversations[0].open
                proxy.drop()
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                assert closed.value.reason is not None and closed.value.reason.code == 1006
            await sim.wait_for(lambda: not sim.conversations[0].open)
            assert sim.conversations[0].close_code in (None, 1006)


async def test_throttled_proxy_pushes_back_on_the_sender() -> None:
    """A thin link holds only a bounded amount: the sender's send_all blocks, as on a real link."""

    async def sink(stream: trio.SocketStream) -> None:
        try:
            async for _ in stream:
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, sink, 0)
            async with FaultProxy("127.0.0.1", listeners[0].socket.getsockname()[1]) as proxy:
                proxy.bandwidth = 8000  # 64 kbit/s
                stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
                written = 0
                start = trio.current_time()
                with trio.move_on_after(1.0):
                    while True:
                        await stream.send_all(bytes(1024))
                        written += 1024
                elapsed = trio.current_time() - start
                # Beyond what crossed, only the proxy's quarter second and the (small) kernel
                # buffers on each side are held; unbounded, loopback would take megabytes.
                held = written - proxy.stats.bytes_up
                assert proxy.stats.bytes_up <= 8000 * elapsed + 200
                assert held < 80_000, held
                proxy.bandwidth = None
                await stream.aclose()
            nursery.cancel_scope.cancel()

"""A TCP fault proxy in Trio: imitates Wi-Fi loss, stalls, latency and thin links on real sockets.

```python
async with FaultProxy("127.0.0.1", sim.agent.port) as proxy:
    url = sim.signed_url().replace(f":{sim.agent.port}", f":{proxy.port}")
    proxy.delay, proxy.jitter = 0.08, 0.02    # seconds each way, seeded jitter
    proxy.stall = True                          # hold every byte, keep sockets open
    proxy.drop(); proxy.down = True             # cut every link now; refuse new ones
```

Each direction of each connection is a reader → queue → writer pipeline, so the delay is
latency (bytes are due ``delay`` after they were read, order kept), not throughput, and
the bandwidth limit paces the writer. The queue is bounded (``buffer`` bytes; with a
bandwidth limit, ``buffer_seconds`` of it): past the bound the reader stops reading, the
proxy's small socket receive buffer fills and the sender's ``send`` blocks, as on a real
thin link. The proxy never hides a backlog the sender could otherwise see.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Final

import trio

__all__ = ["FaultProxy", "ProxyStats", "open_fault_proxy"]

log = logging.getLogger(__name__)

READ_SIZE: Final = 65536
#: Bytes each direction may hold in the proxy (unthrottled; enough for loopback speed under delay).
DEFAULT_BUFFER: Final = 256 * 1024
#: With a bandwidth limit, each direction holds at most this many seconds' worth of bytes.
DEFAULT_BUFFER_SECONDS: Final = 0.25
#: SO_RCVBUF of the proxy's sockets while a bandwidth limit is set (Linux doubles it), so the
#: kernel does not hold seconds of a throttled sender's bytes either.
THROTTLED_RCVBUF: Final = 4096
#: SO_RCVBUF once the limit is lifted again (a tiny window would slow loopback to a crawl).
UNTHROTTLED_RCVBUF: Final = 256 * 1024
#: The bandwidth limit writes in slices of this many seconds' worth of bytes.
BANDWIDTH_SLICE: Final = 0.01
#: The bandwidth limit keeps to a schedule, not to a sleep after each slice: a writer that
#: woke late (a slow or busy CPU) catches up, so the rate holds on any machine. Lateness
#: beyond this many seconds is not made up; a link that was idle starts a new schedule.
BANDWIDTH_BURST: Final = 0.1


@dataclass
class ProxyStats:
    """Counters: connections accepted, refused (while down) and dropped; bytes forwarded each way."""

    accepted: int = 0
    refused: int = 0
    dropped: int = 0
    bytes_up: int = 0  # client → target
    bytes_down: int = 0  # target → client


@dataclass(eq=False)
class _Link:
    """One proxied connection."""

    client: trio.SocketStream
    upstream: trio.SocketStream | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class FaultProxy:
    """Forwards TCP from ``127.0.0.1:port`` to ``target_host:target_port`` with fault switches.

    ``down``: refuse (accept and reset) new connections. ``stall``: forward nothing, keep
    sockets open; bytes are held and flow again when it is switched off. ``delay`` and
    ``jitter``: seconds added to each chunk, each way. ``bandwidth``: bytes per second
    per direction and connection (None: unlimited).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = port
        self.down = False
        self.delay = 0.0
        self.jitter = 0.0
        self.bandwidth: float | None = None
        #: Bytes each direction may hold without a bandwidth limit.
        self.buffer = DEFAULT_BUFFER
        #: With a bandwidth limit: seconds' worth of bytes each direction may hold.
        self.buffer_seconds = DEFAULT_BUFFER_SECONDS
        #: With ``stall``: discard bytes instead of holding them, like a dead Wi-Fi link;
        #: handshakes in flight then never complete, even after the stall ends.
        self.blackhole = False
        self.stats = ProxyStats()
        self._stall = False
        self._unstalled = trio.lowlevel.ParkingLot()
        self._rng = random.Random(seed)
        self._links: set[_Link] = set()
        self._exit: AsyncExitStack | None = None

    # ------------------------------------------------------------------ switches

    @property
    def stall(self) -> bool:
        """True: hold every byte and keep the sockets open."""
        return self._stall

    @stall.setter
    def stall(self, value: bool) -> None:
        self._stall = value
        if not value:
            self._unstalled.unpark_all()

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._links)

    def drop(self) -> int:
        """Reset every current connection abruptly (both sides see a dead socket); returns how many."""
        links = list(self._links)
        for link in links:
            link.scope.cancel()
        self.stats.dropped += len(links)
        return len(links)

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the bound port."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("fault proxy listening port=%d target=%s:%d", self.port, self.target_host, self.target_port)
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(trio.serve_listeners, self._handle_safely, listeners))
            task_status.started(self.port)

    async def __aenter__(self) -> FaultProxy:
        stack = AsyncExitStack()
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        await nursery.start(self.run)
        self._exit = stack
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._exit is not None
        stack, self._exit = self._exit, None
        return await stack.__aexit__(exc_type, exc, tb)

    async def _handle_safely(self, client: trio.SocketStream) -> None:
        """One connection; an unexpected error closes it, never the proxy."""
        try:
            await self._handle(client)
        except Exception:
            log.exception("fault proxy: connection failed")

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.down:
            self.stats.refused += 1
            _abort(client)
            return
        link = _Link(client)
        self._links.add(link)
        self.stats.accepted += 1
        try:
            with link.scope:
                try:
                    link.upstream = await trio.open_tcp_stream(self.target_host, self.target_port)
                except OSError as exc:
                    log.info("fault proxy: target unreachable error=%s", exc)
                    return
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pipe, client, link.upstream, True, nursery.cancel_scope)
                    nursery.start_soon(self._pipe, link.upstream, client, False, nursery.cancel_scope)
        finally:
            self._links.discard(link)
            _abort(client)
            if link.upstream is not None:
                _abort(link.upstream)

    async def _pipe(self, src: trio.SocketStream, dst: trio.SocketStream, up: bool, scope: trio.CancelScope) -> None:
        """One direction: read, stamp a due time, write in order; the end of one side ends the link.

        Reads only while the queue holds less than :meth:`_limit` bytes (backpressure).
        """
        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)
        queue = _Queued()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, receive, dst, up, scope, queue)
            last_due = 0.0
            rcvbuf: int | None = None  # None: the kernel's own (autotuned) until first throttled
            try:
                while True:
                    while queue.bytes >= (limit := self._limit()):
                        await queue.drained.park()
                    want = THROTTLED_RCVBUF if self.bandwidth is not None else rcvbuf and UNTHROTTLED_RCVBUF
                    if want is not None and want != rcvbuf:
                        rcvbuf = _set_rcvbuf(src, want)
                    data = await src.receive_some(max(1, min(READ_SIZE, limit - queue.bytes)))
                    if not data:
                        break
                    if self._stall and self.blackhole:
                        continue
                    extra = self.delay + (self._rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
                    last_due = max(last_due, trio.current_time() + max(0.0, extra))
                    queue.bytes += len(data)
                    send.send_nowait((last_due, data))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                scope.cancel()
            finally:
                send.close()

    def _limit(self) -> int:
        """Bytes one direction may hold now."""
        rate = self.bandwidth
        if rate is None:
            return max(1, self.buffer)
        return max(1, int(rate * BANDWIDTH_SLICE), int(rate * self.buffer_seconds))

    async def _writer(
        self,
        receive: trio.MemoryReceiveChannel[tuple[float, bytes]],
        dst: trio.SocketStream,
        up: bool,
        scope: trio.CancelScope,
        queue: _Queued,
    ) -> None:
        next_at = -math.inf  # with a bandwidth limit: when the next slice may go (-inf: at once)
        try:
            async for due, data in receive:
                if due > next_at or self._stall:
                    next_at = -math.inf  # the link had nothing to send for a while: a new burst
                await trio.sleep_until(due)
                while self._stall:
                    await self._unstalled.park()
                view = memoryview(data)
                while view:
                    rate = self.bandwidth
                    piece = view if rate is None else view[: max(1, int(rate * BANDWIDTH_SLICE))]
                    if up:
                        self.stats.bytes_up += len(piece)
                    else:
                        self.stats.bytes_down += len(piece)
                    await dst.send_all(piece)
                    view = view[len(piece) :]
                    queue.bytes -= len(piece)
                    queue.drained.unpark_all()
                    if rate is None:
                        next_at = -math.inf
                    else:
                        now = trio.current_time()
                        start = now if next_at == -math.inf else max(next_at, now - BANDWIDTH_BURST)
                        next_at = start + len(piece) / rate
                        await trio.sleep_until(next_at)
            # The source closed cleanly: pass the half-close on.
            await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            scope.cancel()


@dataclass(eq=False)
class _Queued:
    """Bytes one direction holds (read, not yet written); the reader parks while it is full."""

    bytes: int = 0
    drained: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)


def _set_rcvbuf(stream: trio.SocketStream, size: int) -> int:
    """Set a socket's receive buffer (small: the kernel does not hide a throttled backlog)."""
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError:
        pass
    return size


def _abort(stream: trio.SocketStream) -> None:
    """Close with RST (SO_LINGER 0): what a vanished network link looks like to a peer."""
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    stream.socket.close()


@asynccontextmanager
async def open_fault_proxy(target_host: str, target_port: int, **kwargs: object) -> AsyncIterator[FaultProxy]:
    """``async with open_fault_proxy(host, port) as proxy:`` (same as ``async with FaultProxy(...)``)."""
    async with FaultProxy(target_host, target_port, **kwargs) as proxy:  # type: ignore[arg-type]
        yield proxy

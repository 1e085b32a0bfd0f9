"""The agent's WebSocket as a transport: TCP/TLS with a small send buffer, and backpressure.

:func:`open_link` opens TCP (and TLS for ``wss://``) itself rather than letting
trio-websocket do it, so the socket's send buffer can be kept small
(:data:`SEND_BUFFER`); :meth:`Link.wait_for_room` then holds the microphone back while
the kernel has more than :data:`CONGESTED_BYTES` not yet sent, so a thin link's backlog
stays in the uplink buffer (coalesced, bounded, silence dropped first) instead of
hiding in the kernel. :meth:`Link.send_text` sends a message without yielding to the
scheduler when it can (the microphone's 50 messages a second). :func:`describe_exc`
turns a transport exception into a short sentence for the status board.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

import trio
import trio_websocket
from wsproto.events import TextMessage

from kioskd import websocket_fix

__all__ = ["CONGESTED_BYTES", "SEND_BUFFER", "Link", "congested", "describe_exc", "open_link"]

log = logging.getLogger(__name__)
websocket_fix.install()  # no pong after our own Close (trio-websocket #184)

#: Messages trio-websocket may queue before its reader stops (it then stops answering pings).
MESSAGE_QUEUE = 256
#: SO_SNDBUF of the agent socket. Microphone audio is 16 kHz int16 = 32 kB/s, ~43 kB/s as
#: base64 in JSON, so 16 KiB holds ~380 ms (Linux doubles the figure for its bookkeeping,
#: which small segments mostly use up). The kernel default (hundreds of KB on Wi-Fi, MBs on
#: loopback) would swallow many seconds of audio on a thin link before ``send_message``
#: blocked, hiding the backlog from the uplink buffer, whose bound and speech-first drops
#: then never engaged while audio arrived seconds late. 16 KiB still keeps 20 ms messages
#: flowing over a ~300 ms round trip.
SEND_BUFFER = 16 * 1024
#: The link is congested while more than this many bytes sit in the socket not yet sent
#: (~50 ms of audio): the sender then takes no audio from the uplink, so the backlog stays
#: in the uplink buffer (coalesced, bounded, silence dropped first), and the trio-websocket
#: send lock is free for pongs and close frames. Set as the socket's TCP_NOTSENT_LOWAT, so
#: the kernel itself reports the socket writable only below it (also under qemu-user,
#: which does not implement the SIOCOUTQNSD ioctl).
CONGESTED_BYTES = 2048
#: How often the sender looks again while the link is congested.
CONGESTION_POLL = 0.01
#: setsockopt(IPPROTO_TCP): writable only while fewer unsent bytes are queued (Linux ≥ 3.12, macOS).
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)

Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


@dataclass
class Link:
    """An open WebSocket to the agent and the TCP socket under it."""

    ws: trio_websocket.WebSocketConnection
    socket: socket.socket | None
    plain: bool = False
    """True: the WebSocket runs straight on :attr:`socket` (``ws://``, no TLS in between)."""
    fast_sends: int = 0
    """Messages :meth:`send_text` wrote to the socket at once, without a scheduling point."""

    async def send_text(self, text: str) -> None:
        """Send one text message like ``ws.send_message``, without yielding when the socket takes it.

        trio-websocket's send takes its lock and the socket send, two scheduling points
        (a pass of Trio's loop each, the larger part of a 20 ms microphone message's cost).
        Here, on a plain socket with the lock free, the frame is serialised by the same
        wsproto connection, the lock taken without waiting and the bytes written to the
        non-blocking socket directly; whatever the kernel does not take at once is sent
        the usual way while the lock is still held, so frames never interleave. TLS, a
        held lock or a closed connection take trio-websocket's own path. Raises what
        ``send_message`` raises (ConnectionClosed once the link is gone).
        """
        ws = self.ws
        lock: trio.StrictFIFOLock | None = getattr(ws, "_stream_lock", None)
        proto: Any = getattr(ws, "_wsproto", None)
        sock = self.socket
        if not self.plain or sock is None or lock is None or proto is None or lock.locked() or ws.closed:
            await ws.send_message(text)
            return
        data = proto.send(TextMessage(data=text))
        lock.acquire_nowait()
        try:
            sent = _write_nowait(sock.fileno(), data)
            if sent == len(data):
                self.fast_sends += 1
            else:
                await ws._stream.send_all(memoryview(data)[sent:])
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()  # as trio-websocket does when its own send fails
            raise trio_websocket.ConnectionClosed(ws.closed) from None
        finally:
            lock.release()

    async def wait_for_room(self) -> int:
        """Return once the socket can take a message without queueing audio in the kernel.

        Returns how many polls it waited. Why wait here rather than bound each send with a
        timeout: cancelling ``send_message`` part-way leaves half a frame on the wire, which
        ends the connection; and skipping a chunk would drop audio without regard to speech.
        Waiting *before* taking audio from the uplink leaves the backlog where it is
        coalesced into larger messages and, past its bound, dropped silence first. Each send
        then fits in the socket at once, so it holds trio-websocket's send lock only briefly
        and pongs are not queued behind seconds of audio. A link that stops moving
        altogether is caught by the stall watchdog, not here.
        """
        waits = 0
        while congested(self.socket):
            waits += 1
            await trio.sleep(CONGESTION_POLL)
        return waits


async def open_link(url: str, nursery: trio.Nursery, *, max_message_bytes: int) -> Link:
    """Open the WebSocket at ``url``; trio-websocket's reader task runs in ``nursery``.

    Raises what opening raises: ValueError (a URL that is not ``ws://``/``wss://`` with a
    host), OSError, trio.BrokenResourceError, trio_websocket.HandshakeError or
    ConnectionRejected.
    """
    host, resource, stream = await _open_stream(url)
    ws = await trio_websocket.wrap_client_stream(
        nursery, stream, host, resource, message_queue_size=MESSAGE_QUEUE, max_message_size=max_message_bytes
    )
    return Link(ws, _raw_socket(stream), plain=isinstance(stream, trio.SocketStream))


async def _open_stream(url: str) -> tuple[str, str, Stream]:
    """Open TCP (and TLS for ``wss://``) to the URL's host: ``(Host header, resource, stream)``.

    TLS uses the system's trust store with SNI and hostname checking.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError("WebSocket URL scheme must be ws: or wss:")
    host = parts.hostname
    if not host:
        raise ValueError("WebSocket URL has no host")
    secure = parts.scheme == "wss"
    default_port = 443 if secure else 80
    port = parts.port or default_port  # .port raises ValueError when out of range
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    name = f"[{host}]" if ":" in host else host
    host_header = name if port == default_port else f"{name}:{port}"
    tcp = await trio.open_tcp_stream(host, port)
    try:
        _limit_send_buffer(tcp.socket)
        if not secure:
            return host_header, resource, tcp
        tls = trio.SSLStream(tcp, ssl.create_default_context(), server_hostname=host, https_compatible=True)
        await tls.do_handshake()  # here, so a certificate problem is reported as one
        return host_header, resource, tls
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise


def _limit_send_buffer(sock: trio.socket.SocketType) -> None:
    for level, option, value, what in (
        (socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER, "send buffer"),
        (socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, CONGESTED_BYTES, "unsent-bytes mark (TCP_NOTSENT_LOWAT)"),
    ):
        try:
            sock.setsockopt(level, option, value)
        except OSError as exc:  # not fatal: the link works, only with more hidden latency
            log.warning("cannot set the agent socket's %s error=%s", what, exc)


def _write_nowait(fd: int, data: bytes) -> int:
    """Write to a non-blocking socket: the bytes the kernel took (0 if none fit now)."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0


def _raw_socket(stream: Stream) -> socket.socket | None:
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    return inner.socket if isinstance(inner, trio.SocketStream) else None  # type: ignore[return-value]


def congested(sock: socket.socket | trio.socket.SocketType | None) -> bool:
    """True while the kernel holds more unsent bytes than ``TCP_NOTSENT_LOWAT`` (or its send buffer is full)."""
    if sock is None or sock.fileno() < 0:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    return not poller.poll(0)


def describe_exc(exc: BaseException) -> str:
    """A transport exception as a short sentence (TLS and handshake errors by their cause)."""
    if isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, ssl.SSLError):
        exc = exc.__cause__
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, trio_websocket.HandshakeError) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text

"""The local control socket: start, end or inspect a running kiosk (``kioskd ctl`` is its client).

Protocol: one JSON object per line over a Unix stream socket. A request is
``{"cmd": "start" | "end" | "status"}``; the answer is ``{"ok": true, ...}`` (for
``status``: the kiosk's status object) or ``{"ok": false, "error": "..."}``. A touch
screen or a script can drive the kiosk with nothing more than ``socat``.

The daemon adds commands that wait or stream (:data:`Handler`): ``start`` answers once
the conversation is open or the start failed; ``watch`` answers ``{"ok": true}`` and then
sends one event per line until the client hangs up; ``volume`` (with ``"value"``),
``mute``, ``unmute``, ``close`` and ``open`` change the live controls. During a
conversation ``feedback`` (``"text": "like"|"dislike"``), ``say`` and ``context`` (with
``"text"``) and ``activity`` reach the agent as the protocol's ``feedback``,
``user_message``, ``contextual_update`` and ``user_activity``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import trio

from kioskd.ops.logs import redact
from kioskd.state import Command

__all__ = [
    "START_TIMEOUT", "ControlServer", "ControlSocketInUse", "Handler", "Reply", "Request", "check_socket_free",
    "handle_request", "socket_owner",
]

log = logging.getLogger(__name__)

#: A request line longer than this is refused (a control request is a few dozen bytes).
MAX_REQUEST = 4096
#: How long a client may take to send a whole request line (from connecting or the previous
#: reply; bytes trickled in do not extend it), and to take a reply.
REQUEST_TIMEOUT = 5.0
#: Connections served at once (a touch screen, a script, ``kioskd ctl``: a handful).
MAX_CONNECTIONS = 8
#: Connections the kernel queues before accept().
LISTEN_BACKLOG = 16
#: accept() failures that mean "no room now" (file descriptors, memory): retry after ACCEPT_RETRY.
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_RETRY = 0.1
#: struct ucred {pid_t pid; uid_t uid; gid_t gid;} as SO_PEERCRED returns it.
_UCRED = struct.Struct("3i")
#: Socket mode: owner and group (e.g. a touch-screen app in the kioskd group).
SOCKET_MODE = 0o660
#: How long the daemon lets ``start`` wait for the conversation to open (the CLI waits a little longer).
START_TIMEOUT = 15.0

_COMMANDS = {"start": Command.START, "end": Command.END, "toggle": Command.TOGGLE}


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    cmd: str
    value: float | None = None
    text: str = ""


Request = _Request
#: Sends one answer line to the client.
Reply = Callable[[dict[str, Any]], Awaitable[None]]
#: A command the daemon serves itself: it may answer once (after waiting) or stream many lines.
Handler = Callable[[Request, Reply], Awaitable[None]]
_request_decoder = msgspec.json.Decoder(_Request)


def handle_request(
    line: bytes, send: Callable[[Command], None], status: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Answer one request line (pure apart from ``send``). Never raises."""
    try:
        req = _request_decoder.decode(line)
    except msgspec.DecodeError as exc:
        return {"ok": False, "error": f"bad request: {exc}; expected {{\"cmd\": \"start\"|\"end\"|\"status\"}}"}
    if req.cmd == "status":
        return {"ok": True, **status()}
    cmd = _COMMANDS.get(req.cmd)
    if cmd is None:
        return {"ok": False, "error": f"unknown cmd {req.cmd[:40]!r}; known: start, end, toggle, status"}
    send(cmd)
    return {"ok": True, "cmd": req.cmd}


class ControlSocketInUse(Exception):
    """Another process answers on the control socket: this kiosk must not take it over."""


def socket_owner(path: str | os.PathLike[str]) -> int | None:
    """The PID of the process listening on the Unix socket at ``path`` (0 if it answers but
    cannot be named), or None if nothing listens there (a stale socket file)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        except (BlockingIOError, PermissionError):
            return 0  # listening with a full backlog, or not ours to open: alive either way
        pid, _uid, _gid = _UCRED.unpack(probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        return int(pid)


def check_socket_free(path: str) -> None:
    """Raise :class:`ControlSocketInUse` when a running process answers on ``path``."""
    if not stat.S_ISSOCK(_lstat_mode(path)):
        return
    pid = socket_owner(path)
    if pid is not None:
        who = f" (pid {pid})" if pid else ""
        raise ControlSocketInUse(
            f"control.socket: {path} is in use by a running kioskd{who}; "
            "stop it first, or give this one another control.socket"
        )


def _lstat_mode(path: str) -> int:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0


class _Connection:
    """One client: its stream, a scope to close it, and since when it waits for a request."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.scope = trio.CancelScope()
        self.waiting_since: float | None = trio.current_time()


class ControlServer:
    """Serves the control socket; each connection may send several request lines.

    At most MAX_CONNECTIONS at once: a new one past that closes at once the one that has
    waited longest for its next request (or itself, when every one is being answered), so
    idle or trickling clients cannot lock ``kioskd ctl`` out. Each request line must arrive
    whole within REQUEST_TIMEOUT (trickled bytes do not extend it), each reply be taken
    within REQUEST_TIMEOUT. Out of file descriptors, accepting pauses (one log line per
    spell) instead of failing or flooding the journal.
    """

    def __init__(
        self, path: str, send: Callable[[Command], None], status: Callable[[], dict[str, Any]],
        handlers: Mapping[str, Handler] | None = None,
    ) -> None:
        self.path = path
        self._send = send
        self._status = status
        self._handlers = dict(handlers or {})
        self._connections: dict[_Connection, None] = {}  # insertion order: oldest first
        self._identity: tuple[int, int] | None = None
        self._capacity_errors = 0

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return len(self._connections)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled. Raises ControlSocketInUse when another process answers on the path."""
        listener = await self._listen()
        try:
            task_status.started()
            async with trio.open_nursery() as nursery:
                await self._accept_forever(listener, nursery)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
            self._unlink_if_ours()

    async def _listen(self) -> trio.SocketListener:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise OSError(f"control.socket: {path} exists and is not a socket")
            check_socket_free(self.path)
            path.unlink()  # stale socket from a previous run: nothing answers on it
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            raw.bind(str(path))  # a local path: no thread needed (trio's bind would use one)
            os.chmod(path, SOCKET_MODE)
            raw.listen(LISTEN_BACKLOG)
        except BaseException:
            raw.close()
            raise
        info = os.stat(path)
        self._identity = (info.st_dev, info.st_ino)
        log.info("control socket listening path=%s", path)
        await trio.lowlevel.checkpoint()
        return trio.SocketListener(trio.socket.from_stdlib_socket(raw))

    def _unlink_if_ours(self) -> None:
        """Remove the socket file only if it is still the one this server bound."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (info.st_dev, info.st_ino) == self._identity:
            os.unlink(self.path)

    async def _accept_forever(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                if not self._capacity_errors:
                    log.warning(
                        "control socket: out of file descriptors (%s); not accepting for now",
                        errno.errorcode.get(exc.errno or 0, exc.errno),
                    )
                self._capacity_errors += 1
                await trio.sleep(ACCEPT_RETRY)
                continue
            if self._capacity_errors:
                log.info("control socket accepting again after %d refused accepts", self._capacity_errors)
                self._capacity_errors = 0
            self._admit(stream, nursery)

    def _admit(self, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            waiting = [c for c in self._connections if c.waiting_since is not None]
            if not waiting:
                stream.socket.close()  # every slot is busy answering: this one is the excess
                return
            oldest = min(waiting, key=lambda c: c.waiting_since or 0.0)
            oldest.scope.cancel()
            del self._connections[oldest]
        connection = _Connection(stream)
        self._connections[connection] = None
        nursery.start_soon(self._serve, connection)

    async def _serve(self, connection: _Connection) -> None:
        buffer = b""
        try:
            with connection.scope:
                async with connection.stream as stream:
                    while True:
                        connection.waiting_since = trio.current_time()
                        line: bytes | None = None
                        with trio.move_on_at(connection.waiting_since + REQUEST_TIMEOUT):
                            line, buffer = await self._read_line(stream, buffer)
                        if line is None:
                            return
                        connection.waiting_since = None
                        handler = self._handler_for(line)
                        if handler is not None:  # may wait or stream: only each reply has a deadline
                            if not await self._run_handler(stream, *handler):
                                return
                            continue
                        with trio.move_on_after(REQUEST_TIMEOUT) as sending:
                            await self._answer(stream, line)
                        if sending.cancelled_caught:
                            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self._connections.pop(connection, None)

    async def _read_line(self, stream: trio.SocketStream, buffer: bytes) -> tuple[bytes | None, bytes]:
        """The next non-blank request line and what follows it; None at the end (EOF, too long)."""
        while True:
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    return line, buffer
            if len(buffer) > MAX_REQUEST:
                await self._reply(stream, {"ok": False, "error": "request too long"})
                return None, b""
            data = await stream.receive_some(MAX_REQUEST)
            if not data:
                return None, b""
            buffer += data

    async def _answer(self, stream: trio.SocketStream, line: bytes) -> None:
        reply = handle_request(line, self._send, self._status)
        if not reply["ok"]:
            log.warning("control request refused error=%r", reply["error"])
        await self._reply(stream, reply)

    @staticmethod
    async def _reply(stream: trio.SocketStream, reply: dict[str, Any]) -> None:
        # redacted like a log line: a secret that reached the status never leaves the socket
        await stream.send_all(redact(json.dumps(reply, default=str)).encode() + b"\n")

    def _handler_for(self, line: bytes) -> tuple[Handler, Request] | None:
        try:
            req = _request_decoder.decode(line)
        except msgspec.DecodeError:
            return None  # handle_request explains it
        handler = self._handlers.get(req.cmd)
        return None if handler is None else (handler, req)

    async def _run_handler(self, stream: trio.SocketStream, handler: Handler, req: Request) -> bool:
        """Run a daemon command until it is done or the client hangs up; False: close the connection.

        Each reply line must be taken within REQUEST_TIMEOUT (a stuck watcher is dropped).
        """
        slow = hung_up = False

        async def reply(answer: dict[str, Any]) -> None:
            nonlocal slow
            with trio.move_on_after(REQUEST_TIMEOUT) as sending:
                await self._reply(stream, answer)
            if sending.cancelled_caught:
                slow = True
                nursery.cancel_scope.cancel()

        async def until_hangup() -> None:
            nonlocal hung_up
            while await stream.receive_some(MAX_REQUEST):
                pass  # nothing more is read while a command runs
            hung_up = True
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_hangup)
            await handler(req, reply)
            nursery.cancel_scope.cancel()
        return not (slow or hung_up)

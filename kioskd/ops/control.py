"""The local control socket, and ``kioskd ctl``: start, end or inspect a running kiosk.

Protocol: one JSON object per line over a Unix stream socket. A request is
``{"cmd": "start" | "end" | "status"}``; the answer is ``{"ok": true, ...}`` (for
``status``: the kiosk's status object) or ``{"ok": false, "error": "..."}``. A touch
screen or a script can drive the kiosk with nothing more than ``socat``.

The daemon adds commands that wait or stream (:data:`Handler`): ``start`` answers once
the conversation is open or the start failed; ``watch`` answers ``{"ok": true}`` and then
sends one event per line until the client hangs up; ``volume`` (with ``"value"``),
``mute``, ``unmute``, ``close`` and ``open`` change the live controls.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import stat
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import trio

from kioskd.state import Command

__all__ = ["ControlServer", "Handler", "Reply", "Request", "handle_request", "main", "request", "watch"]

log = logging.getLogger(__name__)

#: A request line longer than this is refused (a control request is a few dozen bytes).
MAX_REQUEST = 4096
#: How long a client may take to send its request line.
REQUEST_TIMEOUT = 5.0
#: Socket mode: owner and group (e.g. a touch-screen app in the kioskd group).
SOCKET_MODE = 0o660

_COMMANDS = {"start": Command.START, "end": Command.END, "toggle": Command.TOGGLE}


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    cmd: str
    value: float | None = None


Request = _Request
#: Sends one answer line to the client.
Reply = Callable[[dict[str, Any]], Awaitable[None]]
#: A command the daemon serves itself: it may answer once (after waiting) or stream many lines.
Handler = Callable[[Request, Reply], Awaitable[None]]
_request_decoder = msgspec.json.Decoder(_Request)
#: ``kioskd ctl`` waits this much longer than the daemon's own bound on a ``start``.
START_WAIT_MARGIN = 5.0


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


class ControlServer:
    """Serves the control socket; each connection may send several request lines."""

    def __init__(
        self, path: str, send: Callable[[Command], None], status: Callable[[], dict[str, Any]],
        handlers: Mapping[str, Handler] | None = None,
    ) -> None:
        self.path = path
        self._send = send
        self._status = status
        self._handlers = dict(handlers or {})

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; a socket that cannot be made is logged and retried."""
        listener = await self._listen()
        try:
            task_status.started()
            await trio.serve_listeners(self._serve, [listener])
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
            Path(self.path).unlink(missing_ok=True)

    async def _listen(self) -> trio.SocketListener:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise OSError(f"control.socket: {path} exists and is not a socket")
            path.unlink()  # stale socket from a previous run
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(str(path))
        os.chmod(path, SOCKET_MODE)
        sock.listen(16)
        log.info("control socket listening path=%s", path)
        return trio.SocketListener(sock)

    async def _serve(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            async with stream:
                while True:
                    with trio.move_on_after(REQUEST_TIMEOUT) as timeout:
                        data = await stream.receive_some(MAX_REQUEST)
                    if timeout.cancelled_caught or not data:
                        return
                    buffer += data
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.strip():
                            await self._answer(stream, line)
                    if len(buffer) > MAX_REQUEST:
                        await self._reply(stream, {"ok": False, "error": "request too long"})
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def _answer(self, stream: trio.SocketStream, line: bytes) -> None:
        handler = self._handler_for(line)
        if handler is not None:
            await self._run_handler(stream, *handler)
            return
        reply = handle_request(line, self._send, self._status)
        if not reply["ok"]:
            log.warning("control request refused error=%r", reply["error"])
        await self._reply(stream, reply)

    @staticmethod
    async def _reply(stream: trio.SocketStream, reply: dict[str, Any]) -> None:
        await stream.send_all(json.dumps(reply, default=str).encode() + b"\n")

    def _handler_for(self, line: bytes) -> tuple[Handler, Request] | None:
        try:
            req = _request_decoder.decode(line)
        except msgspec.DecodeError:
            return None  # handle_request explains it
        handler = self._handlers.get(req.cmd)
        return None if handler is None else (handler, req)

    async def _run_handler(self, stream: trio.SocketStream, handler: Handler, req: Request) -> None:
        """Run a daemon command; it ends when it is done or when the client hangs up."""

        async def reply(answer: dict[str, Any]) -> None:
            await self._reply(stream, answer)

        async def until_hangup(scope: trio.CancelScope) -> None:
            while await stream.receive_some(MAX_REQUEST):
                pass  # nothing more is read while a command runs
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_hangup, nursery.cancel_scope)
            await handler(req, reply)
            nursery.cancel_scope.cancel()


def request(path: str, cmd: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
    """Send one request to a running kiosk and return its answer (blocking; for the CLI)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def watch(path: str) -> Iterator[dict[str, Any]]:
    """Events from a running kiosk, one dict each, until it goes away (blocking; for the CLI)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        sock.connect(path)
        sock.sendall(b'{"cmd": "watch"}\n')
        sock.settimeout(None)
        with sock.makefile("rb") as lines:
            first = json.loads(lines.readline() or b"{}")
            if not first.get("ok"):
                raise OSError(first.get("error", "the daemon closed the connection"))
            for line in lines:
                yield json.loads(line)


#: ``kioskd ctl`` commands and their one-line help.
CTL_COMMANDS = {
    "start": "start a conversation; waits until it is open (exit 0) or failed (exit 1, with the reason)",
    "end": "end the running conversation",
    "toggle": "start if idle, else end",
    "status": "state, problems, devices, counters (JSON)",
    "watch": "print events (one JSON object per line) until Ctrl-C",
    "volume": "set the speaker volume 0.0-1.0 (kept across restarts): ctl volume 0.6",
    "mute": "silence the speaker (kept across restarts)",
    "unmute": "undo mute",
    "close": "out of service: triggers are ignored and the light says closed (kept across restarts)",
    "open": "back in service (opening hours still apply)",
}


def socket_path(config_path: str) -> str:
    """``control.socket`` from a config file, reading nothing else: a typo elsewhere must not break ``ctl``.

    Raises ConfigError when the file cannot be read or the key is not a string.
    """
    import tomllib

    from kioskd.config import ConfigError, ControlConfig

    try:
        with open(config_path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError([f"{config_path}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{config_path}: not valid TOML: {exc}"]) from None
    value = data.get("control", {}).get("socket", ControlConfig.socket) if isinstance(data.get("control"), dict) \
        else ControlConfig.socket
    if not isinstance(value, str) or not value.strip():
        raise ConfigError([f"control.socket: expected a path, got {value!r}"])
    return value


def main(argv: list[str]) -> int:
    """``kioskd ctl [--config PATH | --socket PATH] COMMAND [VALUE]``."""
    from kioskd.config import DEFAULT_CONFIG, ConfigError

    commands = "\n".join(f"  {name:<8} {help_}" for name, help_ in CTL_COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="kioskd ctl", description="Control a running kioskd.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"commands:\n{commands}\n\nThe socket is writable by root and the kioskd group "
               "(sudo usermod -aG kioskd $USER, then log in again).",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG}); "
                        "only control.socket is read")
    parser.add_argument("--socket", help="control socket path (default: control.socket from the config)")
    parser.add_argument("cmd", choices=list(CTL_COMMANDS), metavar="COMMAND")
    parser.add_argument("value", nargs="?", type=float, help="volume: 0.0 (silent) to 1.0 (full)")
    args = parser.parse_args(argv)
    if (args.cmd == "volume") != (args.value is not None):
        parser.error("volume needs a value 0.0-1.0; no other command takes one")
    path = args.socket
    if path is None:
        try:
            path = socket_path(args.config)
        except ConfigError as exc:
            print("\n".join(exc.problems), file=sys.stderr)
            return 2
    try:
        if args.cmd == "watch":
            return _watch(path)
        fields = {"value": args.value} if args.value is not None else {}
        timeout = START_TIMEOUT + START_WAIT_MARGIN if args.cmd == "start" else 5.0
        reply = request(path, args.cmd, timeout, **fields)
    except (OSError, ValueError) as exc:
        print(f"kioskd ctl: cannot talk to kioskd at {path}: {_why(exc)}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"kioskd ctl {args.cmd}: {reply.get('error', 'failed')}", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2 if args.cmd == "status" else None))
    return 0


#: How long the daemon lets ``start`` wait for the conversation to open (the CLI waits a little longer).
START_TIMEOUT = 15.0


def _why(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return f"{exc.strerror} (the socket is for root and the kioskd group: sudo usermod -aG kioskd $USER)"
    if isinstance(exc, FileNotFoundError):
        return "no socket there (is kioskd running? systemctl status kioskd)"
    return str(exc)


def _watch(path: str) -> int:
    try:
        for event in watch(path):
            print(json.dumps(event), flush=True)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0
    print("kioskd ctl watch: the daemon went away", file=sys.stderr)
    return 1

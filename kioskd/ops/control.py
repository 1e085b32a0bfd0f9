"""The local control socket, and ``kioskd ctl``: start, end or inspect a running kiosk.

Protocol: one JSON object per line over a Unix stream socket. A request is
``{"cmd": "start" | "end" | "status"}``; the answer is ``{"ok": true, ...}`` (for
``status``: the kiosk's status object) or ``{"ok": false, "error": "..."}``. A touch
screen or a script can drive the kiosk with nothing more than ``socat``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from kioskd.state import Command

__all__ = ["ControlServer", "handle_request", "main", "request"]

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


class ControlServer:
    """Serves the control socket; each connection may send several request lines."""

    def __init__(
        self, path: str, send: Callable[[Command], None], status: Callable[[], dict[str, Any]]
    ) -> None:
        self.path = path
        self._send = send
        self._status = status

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
        reply = handle_request(line, self._send, self._status)
        if not reply["ok"]:
            log.warning("control request refused error=%r", reply["error"])
        await self._reply(stream, reply)

    @staticmethod
    async def _reply(stream: trio.SocketStream, reply: dict[str, Any]) -> None:
        await stream.send_all(json.dumps(reply, default=str).encode() + b"\n")


def request(path: str, cmd: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to a running kiosk and return its answer (blocking; for the CLI)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def main(argv: list[str]) -> int:
    """``kioskd ctl [--config PATH | --socket PATH] start|end|toggle|status``."""
    from kioskd.config import DEFAULT_CONFIG, ConfigError, load_config

    parser = argparse.ArgumentParser(prog="kioskd ctl", description="Control a running kioskd.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--socket", help="control socket path (default: control.socket from the config)")
    parser.add_argument("cmd", choices=["start", "end", "toggle", "status"])
    args = parser.parse_args(argv)
    path = args.socket
    if path is None:
        try:
            path = load_config(args.config).control.socket
        except ConfigError as exc:
            print("\n".join(exc.problems), file=sys.stderr)
            return 2
    try:
        reply = request(path, args.cmd)
    except (OSError, ValueError) as exc:
        print(f"kioskd ctl: cannot talk to kioskd at {path}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2 if args.cmd == "status" else None))
    return 0 if reply.get("ok") else 1

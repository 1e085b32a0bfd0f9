"""``kioskd ctl``: talk to a running kiosk over its control socket (:mod:`kioskd.ops.control`).

:func:`request` sends one command and returns the answer, :func:`watch` yields the events
a ``watch`` streams; :func:`main` is the command line (its commands in :data:`CTL_COMMANDS`).
Blocking, plain sockets: no Trio here.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

from kioskd.ops.control import START_TIMEOUT

__all__ = ["CTL_COMMANDS", "TEXT_COMMANDS", "main", "request", "socket_path", "watch"]

#: ``kioskd ctl`` waits this much longer than the daemon's own bound on a ``start``.
START_WAIT_MARGIN = 5.0


#: How often a connect retries while the daemon's accept queue is full.
CONNECT_RETRY = 0.005


def _connect(sock: socket.socket, path: str, timeout: float) -> None:
    """Connect within ``timeout``: a full accept queue (EAGAIN on a Unix socket, at once) is waited out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{path}: the daemon accepted no connection within {timeout:g} s") from None
            time.sleep(CONNECT_RETRY)


def request(path: str, cmd: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
    """Send one request to a running kiosk and return its answer (blocking; for the CLI)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        _connect(sock, path, timeout)
        sock.sendall(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def watch(path: str) -> Iterator[dict[str, Any]]:
    """Events from a running kiosk, one dict each, until it goes away (blocking; for the CLI)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        _connect(sock, path, 5.0)
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
    "feedback": "rate the agent's latest answer: ctl feedback like|dislike",
    "say": "a typed message the agent answers (a touch screen): ctl say Where is the exit?",
    "context": "tell the agent something without interrupting (a door sensor): ctl context the door opened",
    "activity": "the visitor is busy (typing, reading): the agent holds its turn",
}
#: Commands that carry words (``"text"``).
TEXT_COMMANDS = ("feedback", "say", "context")


def socket_path(config_path: str) -> str:
    """``control.socket`` from a config file, reading nothing else: a typo elsewhere must not break ``ctl``.

    Raises ConfigError when the file cannot be read or the key is not a string.
    """
    from kioskd.config import ConfigError, ControlConfig
    from kioskd.schema import read_toml

    data = read_toml(config_path)
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
        prog="kioskd ctl",
        description="Control a running kioskd.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"commands:\n{commands}\n\nThe socket is writable by root and the kioskd group "
               "(sudo usermod -aG kioskd $USER, then log in again).",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG}); "
                        "only control.socket is read")
    parser.add_argument("--socket", help="control socket path (default: control.socket from the config)")
    parser.add_argument("cmd", choices=list(CTL_COMMANDS), metavar="COMMAND")
    parser.add_argument("value", nargs="*", help="volume: 0.0 (silent) to 1.0 (full); feedback: like|dislike; "
                        "say, context: the text")
    args = parser.parse_args(argv)
    fields: dict[str, Any] = {}
    if args.cmd in TEXT_COMMANDS:
        if not args.value:
            parser.error(f"{args.cmd} needs {'like or dislike' if args.cmd == 'feedback' else 'some text'}")
        fields["text"] = " ".join(args.value)
    elif (args.cmd == "volume") != bool(args.value) or len(args.value) > 1:
        parser.error("volume needs a value 0.0-1.0; no other command takes one")
    elif args.value:
        try:
            fields["value"] = float(args.value[0])
        except ValueError:
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

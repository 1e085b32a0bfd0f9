"""A real ``redis-server`` (Debian package) on a free loopback port, for tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT = 10.0


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(port: int, *words: str) -> bytes:
    """Send one command (RESP array) and return the raw first reply line."""
    payload = f"*{len(words)}\r\n".encode() + b"".join(f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=START_TIMEOUT) as sock:
        sock.sendall(payload)
        return sock.makefile("rb").readline()


class RedisServer:
    """One redis-server process without persistence; ``stop()`` and ``start()`` keep its port."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/setup installs the Debian package)")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--protected-mode", "yes"]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if command(self.port, "PING").startswith(b"+PONG"):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        """The running server's process id."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    def stop(self) -> None:
        """Stop it (the data goes with it)."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=START_TIMEOUT)
            self._proc = None

    def flush(self) -> None:
        """Empty every database."""
        command(self.port, "FLUSHALL")


@contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped afterwards."""
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()

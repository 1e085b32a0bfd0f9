"""kioskd.ops.systemd against a real NOTIFY_SOCKET (a datagram socket this test binds)."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from kioskd.ops import systemd

WEDGE_SECONDS = 0.5
WATCHDOG_USEC_FAST = 100_000  # 0.1 s interval → a ping every 0.05 s


class Receiver:
    """The systemd side: a bound AF_UNIX datagram socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def drain(self) -> list[str]:
        """Every datagram received so far, in arrival order."""
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A filesystem NOTIFY_SOCKET in a short temporary directory (sun_path is 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        path = str(Path(tmp) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.setblocking(False)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            monkeypatch.delenv("WATCHDOG_PID", raising=False)
            monkeypatch.delenv("WATCHDOG_USEC", raising=False)
            yield Receiver(sock)


def test_unset_socket_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    assert systemd.ready() is False and systemd.watchdog_ping() is False


def test_messages_arrive(notify_socket: Receiver) -> None:
    assert systemd.ready()
    assert systemd.status("idle,\nwaiting  for button")
    assert systemd.stopping()
    assert systemd.watchdog_ping()
    assert systemd.notify("A=1", "B=2")
    assert notify_socket.drain() == [
        "READY=1",
        "STATUS=idle, waiting for button",
        "STOPPING=1",
        "WATCHDOG=1",
        "A=1\nB=2",
    ]


def test_reloading_carries_monotonic_usec(notify_socket: Receiver) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.reloading()
    (message,) = notify_socket.drain()
    first, second = message.split("\n")
    assert first == "RELOADING=1" and second.startswith("MONOTONIC_USEC=")
    assert int(second.split("=")[1]) >= before


def test_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"kioskd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready()
        assert sock.recv(100) == b"READY=1"


def test_missing_socket_returns_false(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert systemd.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert systemd.ready() is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 30.0),
        ("30000000", "self", 30.0),
        ("30000000", "1", None),
        ("0", None, None),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert systemd.watchdog_interval() == expected


async def test_watchdog_task_returns_without_watchdog(notify_socket: Receiver) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(systemd.watchdog_task, lambda: True) is None
    assert notify_socket.drain() == []


async def test_watchdog_pings_only_while_healthy(
    notify_socket: Receiver, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    # Virtual time (pytest-trio's MockClock, autojump_threshold=0): interval 1 s → a ping every 0.5 s.
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    healthy = False
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(systemd.watchdog_task, lambda: healthy) == 1.0
            await trio.sleep(10.25)
            assert notify_socket.drain() == []  # unhealthy: not one ping in 10 s
            healthy = True
            await trio.sleep(0.5)  # the loop notices at its next 0.5 s tick (t=10.5)
            await trio.sleep(2.0)  # ticks at 10.5, 11.0, 11.5, 12.0, 12.5
            assert notify_socket.drain() == ["WATCHDOG=1"] * 5
            healthy = False
            await trio.sleep(5)
            assert notify_socket.drain() == []
            nursery.cancel_scope.cancel()


async def test_health_check_that_raises_counts_as_unhealthy(
    notify_socket: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC_FAST))

    def broken() -> bool:
        raise RuntimeError("check failed")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(systemd.watchdog_task, broken)
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
    assert notify_socket.drain() == []


async def test_wedged_trio_loop_stops_the_pings(notify_socket: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blocking call on the Trio thread silences the watchdog for as long as it blocks.

    The markers go through the same socket from the same thread, so their order
    against the pings is the order of sending. A thread-based pinger would put
    about ten pings between them.
    """
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC_FAST))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(systemd.watchdog_task, lambda: True)
            await trio.sleep(0.3)
            systemd.notify("X_WEDGE=begin")
            time.sleep(WEDGE_SECONDS)
            systemd.notify("X_WEDGE=end")
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
    received = notify_socket.drain()
    begin, end = received.index("X_WEDGE=begin"), received.index("X_WEDGE=end")
    assert received[begin + 1 : end] == []
    assert received[:begin].count("WATCHDOG=1") >= 2  # pings flowed before…
    assert received[end + 1 :].count("WATCHDOG=1") >= 2  # …and resume after

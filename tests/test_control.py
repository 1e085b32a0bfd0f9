"""The control socket under a second copy, slow or hostile clients, many connections and fd exhaustion."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kioskd.ops import control, ctl
from kioskd.ops.control import ControlServer, ControlSocketInUse
from kioskd.ops.ctl import request
from kioskd.state import Command

IO_TIMEOUT = 20
ROOT = Path(__file__).resolve().parent.parent


def short_path(tmp_path: Path, name: str = "c.sock") -> str:
    """A socket path short enough for sun_path (108 bytes) even under a deep pytest tmp dir."""
    path = tmp_path / name
    if len(str(path)) < 100:
        return str(path)
    return f"/tmp/kioskd-test-{os.getpid()}-{name}"


@asynccontextmanager
async def serving(path: str, sent: list[Command] | None = None) -> AsyncIterator[ControlServer]:
    server = ControlServer(path, (sent if sent is not None else []).append, lambda: {"state": "idle"})
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server
        nursery.cancel_scope.cancel()


async def ask(path: str, line: bytes) -> bytes:
    async with await trio.open_unix_socket(path) as stream:
        await stream.send_all(line)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            reply += chunk
        return reply


# --------------------------------------------------------------------------- a second copy


async def test_a_second_server_refuses_a_live_socket_and_names_the_pid(tmp_path: Path) -> None:
    path = short_path(tmp_path)
    with trio.fail_after(IO_TIMEOUT):
        async with serving(path):
            second = ControlServer(path, lambda cmd: None, lambda: {})
            with pytest.raises(ControlSocketInUse, match=rf"in use by a running kioskd \(pid {os.getpid()}\)"):
                await second.run()
            assert Path(path).exists()
            reply = json.loads(await ask(path, b'{"cmd": "status"}\n'))  # the first one still answers
    assert reply == {"ok": True, "state": "idle"}
    assert not Path(path).exists()  # its own socket is removed at exit


async def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = short_path(tmp_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # a socket file nobody listens on: what a killed daemon leaves
    with trio.fail_after(IO_TIMEOUT):
        async with serving(path):
            reply = json.loads(await ask(path, b'{"cmd": "status"}\n'))
    assert reply["ok"]


async def test_exit_leaves_a_socket_that_is_not_its_own(tmp_path: Path) -> None:
    path = short_path(tmp_path)
    with trio.fail_after(IO_TIMEOUT):
        async with serving(path):
            os.unlink(path)  # an operator removed it, and something else bound the path
            other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            other.bind(path)
    try:
        assert Path(path).exists()
    finally:
        other.close()
        os.unlink(path)


# --------------------------------------------------------------------------- slow and many clients


async def trickle_until_closed(tmp_path: Path) -> None:
    """A newline every 2 s used to hold a connection forever; now it is closed REQUEST_TIMEOUT after opening."""
    path = short_path(tmp_path)
    with trio.fail_after(IO_TIMEOUT):
        async with serving(path), await trio.open_unix_socket(path) as stream:
            opened = trio.current_time()
            closed_at = None
            with trio.move_on_after(4 * control.REQUEST_TIMEOUT):
                while closed_at is None:
                    try:
                        await stream.send_all(b"\n")
                    except trio.BrokenResourceError:
                        closed_at = trio.current_time()
                        break
                    with trio.move_on_after(2.0):
                        if await stream.receive_some(100) == b"":
                            closed_at = trio.current_time()
    assert closed_at is not None
    assert closed_at - opened == pytest.approx(control.REQUEST_TIMEOUT)


def test_trickled_bytes_do_not_extend_the_request_deadline(tmp_path: Path) -> None:
    trio.run(
        trickle_until_closed, tmp_path,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


async def test_the_connection_cap_closes_the_longest_waiting_and_status_still_answers(tmp_path: Path) -> None:
    path = short_path(tmp_path)
    with trio.fail_after(IO_TIMEOUT):
        async with serving(path) as server:
            idle = [await trio.open_unix_socket(path) for _ in range(control.MAX_CONNECTIONS + 5)]
            for stream in idle:
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(b"\n")
            reply = json.loads(await ask(path, b'{"cmd": "status"}\n'))
            assert reply["ok"]
            assert server.connections <= control.MAX_CONNECTIONS
            closed = 0
            for stream in idle:
                with trio.move_on_after(0.5):
                    try:
                        closed += await stream.receive_some(10) == b""
                    except trio.BrokenResourceError:
                        closed += 1
                await stream.aclose()
    assert closed >= 6  # the oldest were closed at once to make room


async def test_a_client_that_never_reads_cannot_hold_a_slot(tmp_path: Path) -> None:
    path = short_path(tmp_path)
    with trio.fail_after(IO_TIMEOUT):
        async with serving(path) as server:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(path)
            sock.setblocking(False)
            try:
                sock.sendall(b'{"cmd": "status"}\n' * 200)  # replies pile up unread
            except BlockingIOError:
                pass
            while server.connections:
                await trio.sleep(0.1)
            sock.close()


# --------------------------------------------------------------------------- hostile bytes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chunks=st.lists(
        st.binary(max_size=600) | st.sampled_from([b"\n", b'{"cmd": "status"}\n', b"\xff" * 5000]), max_size=8
    )
)
def test_fuzzed_control_bytes_get_json_lines_and_the_server_carries_on(tmp_path: Path, chunks: list[bytes]) -> None:
    path = short_path(tmp_path, "fuzz.sock")

    async def main() -> None:
        sent: list[Command] = []
        with trio.fail_after(IO_TIMEOUT):
            async with serving(path, sent):
                async with await trio.open_unix_socket(path) as stream:
                    try:
                        for chunk in chunks:
                            await stream.send_all(chunk)
                        await stream.send_eof()
                        data = b""
                        while chunk := await stream.receive_some(65536):
                            data += chunk
                    except trio.BrokenResourceError:
                        data = b""
                for line in data.splitlines():
                    reply = json.loads(line)
                    assert isinstance(reply, dict) and isinstance(reply["ok"], bool)
                assert json.loads(await ask(path, b'{"cmd": "status"}\n'))["ok"]
        assert all(isinstance(cmd, Command) for cmd in sent)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# --------------------------------------------------------------------------- a real process under an fd limit

HOST_SCRIPT = textwrap.dedent("""
    import logging, resource, signal, sys
    import trio
    from kioskd.ops import logs
    from kioskd.ops.control import ControlServer

    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    logs.setup_logging("info", sys.stderr)
    hog = []

    async def main():
        server = ControlServer(sys.argv[1], lambda cmd: None, lambda: {"state": "idle"})
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            if sys.argv[3] == "exhaust":  # use every fd left until SIGUSR1, so accept() fails with EMFILE
                try:
                    while True:
                        hog.append(open("/dev/null"))
                except OSError:
                    pass
            print("ready", flush=True)
            with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGTERM) as signals:
                async for signum in signals:
                    if signum == signal.SIGUSR1:
                        for f in hog:
                            f.close()
                        hog.clear()
                        print("freed", flush=True)
                    else:
                        nursery.cancel_scope.cancel()

    trio.run(main)
""")


def start_host(path: str, limit: int, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOST_SCRIPT, path, str(limit), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def stop_host(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=IO_TIMEOUT)
    return err


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_1100_held_connections_under_a_1024_fd_limit_and_status_still_answers(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip(f"this test holds 1,100 sockets and needs an fd limit of 1,400 (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    path = short_path(tmp_path, "held.sock")
    proc = start_host(path, 1024, "plain")
    held: list[socket.socket] = []
    try:
        give_up = time.monotonic() + 120
        while len(held) < 1100:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(path)
            except BlockingIOError:  # the backlog is full for a moment: the server is accepting
                sock.close()
                assert time.monotonic() < give_up, f"the server stopped accepting after {len(held)}"
                time.sleep(0.001)
                continue
            with contextlib.suppress(OSError):
                sock.send(b"\n")
            held.append(sock)
        answers = []
        for _ in range(3):
            for sock in held:  # a newline now and then, as the red team's clients did
                with contextlib.suppress(OSError):
                    sock.send(b"\n")
            answers.append(request(path, "status", timeout=IO_TIMEOUT))
        # evicted connections close as their tasks run: settle (a bound for failure only, not speed)
        settle = time.monotonic() + IO_TIMEOUT
        while (fds := open_fds(proc.pid)) >= 100 and time.monotonic() < settle:
            time.sleep(0.05)
    finally:
        for sock in held:
            sock.close()
        err = stop_host(proc)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert answers == [{"ok": True, "state": "idle"}] * 3
    assert fds < 100, fds  # the server holds at most MAX_CONNECTIONS of them
    assert "Traceback" not in err, err[-2000:]


def test_emfile_is_one_line_not_a_traceback_flood_and_accepting_resumes(tmp_path: Path) -> None:
    path = short_path(tmp_path, "emfile.sock")
    proc = start_host(path, 64, "exhaust")
    held: list[socket.socket] = []
    try:
        for _ in range(5):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(IO_TIMEOUT)
            sock.connect(path)  # queued in the backlog: accept() fails with EMFILE
            held.append(sock)
        time.sleep(1.0)  # let the server try (and fail) to accept for a while
        proc.send_signal(signal.SIGUSR1)
        assert proc.stdout is not None and proc.stdout.readline() == "freed\n"
        reply = request(path, "status", timeout=IO_TIMEOUT)
    finally:
        for sock in held:
            sock.close()
        err = stop_host(proc)
    assert reply == {"ok": True, "state": "idle"}
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if "file descriptors" in line or "accepting again" in line]
    assert len(lines) == 2, err[-3000:]  # one when it starts, one when accepting works again
    assert "accepting again" in lines[1]


# --------------------------------------------------------------------------- visitor messages


def test_ctl_visitor_commands_need_their_text(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, words in ((["say"], "say needs some text"), (["feedback"], "feedback needs like or dislike"),
                        (["activity", "now"], "no other command takes one"), (["volume", "loud"], "volume needs")):
        with pytest.raises(SystemExit) as exc:
            ctl.main(["--socket", "/nonexistent.sock", *argv])
        assert exc.value.code == 2 and words in capsys.readouterr().err


async def test_ctl_say_sends_the_words_as_text(tmp_path: Path) -> None:
    path = short_path(tmp_path)
    got: list[control.Request] = []

    async def say(req: control.Request, reply: control.Reply) -> None:
        got.append(req)
        await reply({"ok": True, "cmd": req.cmd})

    commands: list[Command] = []
    server = ControlServer(path, commands.append, lambda: {}, {"say": say})
    with trio.fail_after(IO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            code = await trio.to_thread.run_sync(ctl.main, ["--socket", path, "say", "Where", "is", "the", "exit?"])
            nursery.cancel_scope.cancel()
    assert code == 0 and [(r.cmd, r.text) for r in got] == [("say", "Where is the exit?")]


async def test_replies_are_redacted_like_log_lines(tmp_path: Path) -> None:
    """A secret that reaches the status (say, in an error text) never leaves the socket, escaped or not."""
    from kioskd.ops import logs

    secret = "ctl-secret-Zq9\nWv8-second-line"
    logs.register_secret(secret)
    path = short_path(tmp_path)
    server = ControlServer(path, lambda cmd: None, lambda: {"state": "error", "reason": f"bad header {secret!r}"})
    with trio.fail_after(IO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            reply = await ask(path, b'{"cmd": "status"}\n')
            nursery.cancel_scope.cancel()
    assert b"Zq9" not in reply and b"Wv8" not in reply
    assert json.loads(reply)["state"] == "error"


def _full_listener(path: str) -> tuple[socket.socket, list[socket.socket]]:
    """A Unix listener that accepts nothing, and clients queued on it until its accept queue is full."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(0)
    queued: list[socket.socket] = []
    while True:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        try:
            client.connect(path)
        except BlockingIOError:  # full: what a busy daemon looks like to the next client
            client.close()
            return server, queued
        queued.append(client)


def test_request_waits_out_a_full_accept_queue_and_is_answered(tmp_path: Path) -> None:
    path = short_path(tmp_path, "full.sock")
    server, queued = _full_listener(path)

    def daemon() -> None:  # gets to its queue later: the filler clients have gone, the request is answered
        time.sleep(0.05)
        for client in queued:
            client.close()
        answered = False
        while not answered:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(IO_TIMEOUT)
                if conn.recv(65536):
                    conn.sendall(b'{"ok": true}\n')
                    answered = True

    server.settimeout(IO_TIMEOUT)  # a bound for failure only: the thread never outlives the test
    worker = threading.Thread(target=daemon, daemon=True)
    worker.start()
    try:
        assert request(path, "status", timeout=IO_TIMEOUT) == {"ok": True}
    finally:
        for client in queued:
            client.close()
        worker.join(IO_TIMEOUT)
        server.close()


def test_request_to_a_daemon_that_never_accepts_times_out_naming_the_socket(tmp_path: Path) -> None:
    path = short_path(tmp_path, "stuck.sock")
    server, queued = _full_listener(path)
    try:
        with pytest.raises(TimeoutError, match=r"accepted no connection within 0\.05 s"):
            request(path, "status", timeout=0.05)
    finally:
        for client in queued:
            client.close()
        server.close()

"""The signing backend's HTTP surface fed arbitrary query strings, headers and bodies over a real socket.

One backend (and a test double of the ElevenLabs endpoint) runs for the module on a
thread; hypothesis sends raw HTTP/1.1 requests. Every answer is a documented status,
the backend stays up, and every log line stays one short line without control
characters or secrets.
"""

from __future__ import annotations

import io
import logging
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kioskd.backend import server
from kioskd.ops import logs
from test_backend_server import API_KEY, TOKEN_A, FakeElevenLabs, backend_config, serving_app

#: What the backend (or hypercorn for a request it cannot parse) may answer.
DOCUMENTED = {200, 400, 401, 403, 404, 405, 413, 429, 431, 502}
IO_TIMEOUT = 10.0
MAX_LINE = 1000


@dataclass
class Running:
    host: str
    port: int
    log: io.StringIO


@pytest.fixture(scope="module")
def backend() -> Iterator[Running]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved_level = root.level
    handler = logs.setup_logging("debug", stream)
    started = threading.Event()
    bound: list[str] = []
    stop = trio.Event()
    token: list[trio.lowlevel.TrioToken] = []

    async def main() -> None:
        token.append(trio.lowlevel.current_trio_token())
        upstream = FakeElevenLabs()
        async with serving_app(upstream.app()) as api_base:
            config = replace(
                backend_config(api_base), burst=10**6, rate_per_minute=10**6, unauthenticated_burst=10**6
            )
            async with trio.open_nursery() as nursery:
                (url,) = await nursery.start(lambda task_status: server.serve(config, API_KEY, task_status=task_status))
                bound.append(url)
                started.set()
                await stop.wait()
                nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert started.wait(IO_TIMEOUT)
    host, port = re.match(r"http://([\d.]+):(\d+)", bound[0]).groups()  # type: ignore[union-attr]
    yield Running(host, int(port), stream)
    token[0].run_sync_soon(stop.set)
    thread.join(IO_TIMEOUT)
    root.removeHandler(handler)
    root.setLevel(saved_level)
    logging.captureWarnings(False)


def exchange(running: Running, request: bytes) -> bytes:
    with socket.create_connection((running.host, running.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def status_of(reply: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", reply)
    return int(match.group(1)) if match else None


query_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=200)
header_names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz-_ABCXYZ0123456789"), min_size=1, max_size=20)
header_values = st.binary(max_size=200) | st.sampled_from(
    [f"Bearer {TOKEN_A}", "Bearer ", "Bearer x\x1by", "Basic abc", "bearer  " + TOKEN_A + " "]
).map(str.encode)


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    query=query_text | st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    raw_query=st.booleans(),
    headers=st.lists(st.tuples(header_names | st.just("Authorization"), header_values), max_size=6),
    body=st.binary(max_size=300),
    method=st.sampled_from(["GET", "POST", "HEAD", "GET"]),
)
def test_http_surface(
    backend: Running, query: str, raw_query: bool, headers: list[tuple[str, bytes]], body: bytes, method: str
) -> None:
    from urllib.parse import quote

    target = query if raw_query else "agent_id=" + quote(query, safe="")
    head = f"{method} /signed-url?".encode() + target.encode("utf-8", "surrogateescape") + b" HTTP/1.1\r\nHost: x\r\n"
    for name, value in headers:
        head += name.encode() + b": " + value + b"\r\n"
    request = head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    reply = exchange(backend, request)
    status = status_of(reply)
    assert reply == b"" or status in DOCUMENTED, reply[:200]
    health = exchange(backend, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(health) == 200
    lines = backend.log.getvalue().splitlines()
    backend.log.seek(0)
    backend.log.truncate()
    for line in lines:
        assert line.startswith(("level=", "  ")), line[:200]
        assert len(line) <= MAX_LINE, line[:200]
        assert not re.search(r"[\x00-\x1f\x7f-\x9f]", line), line[:200]
        assert TOKEN_A not in line and API_KEY not in line
        assert "level=error" not in line and "Traceback" not in line, line[:300]

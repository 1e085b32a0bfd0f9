"""The small RESP client: encoding, parsing, scripts by SHA, and what happens to a connection that stalled."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from kioskd.backend.resp import RedisClient, RedisEndpoint, ReplyError, Script, _Reader, encode_command, parse_endpoint
from redis_server import RedisServer, running_redis

IO_TIMEOUT = 10


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://10.0.0.5:6380/2", RedisEndpoint(host="10.0.0.5", port=6380, db=2)),
        ("redis://:s%40cret@h", RedisEndpoint(host="h", password="s@cret")),
        ("rediss://user:pw@h:6390", RedisEndpoint(host="h", port=6390, username="user", password="pw", tls=True)),
        ("unix:///run/redis/redis.sock?db=3", RedisEndpoint(path="/run/redis/redis.sock", db=3)),
    ],
)
def test_parse_endpoint(url: str, expected: RedisEndpoint) -> None:
    assert parse_endpoint(url) == expected


@pytest.mark.parametrize("url", ["http://h", "redis://h/x", "unix://", "redis://h:99999"])
def test_parse_endpoint_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(url)


def test_encode_command() -> None:
    assert encode_command(["SET", "k", b"v\r\n", 7, 0.5]) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n7\r\n$3\r\n0.5\r\n"
    )


async def test_reader_parses_every_reply_kind_from_a_trickle() -> None:
    wire = b"+OK\r\n-ERR bad\r\n:42\r\n$-1\r\n$5\r\nab\r\nc\r\n*3\r\n:1\r\n*1\r\n$0\r\n\r\n$-1\r\n*-1\r\n"
    send, receive = trio.testing.memory_stream_pair()
    reader = _Reader(receive)
    with trio.fail_after(IO_TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def trickle() -> None:
                for i in range(len(wire)):
                    await send.send_all(wire[i : i + 1])

            nursery.start_soon(trickle)
            replies = [await reader.reply() for _ in range(7)]
    error = replies[1]
    assert replies[0] == "OK" and isinstance(error, ReplyError) and str(error) == "ERR bad"
    assert replies[2:] == [42, None, b"ab\r\nc", [1, [b""], None], None]


async def test_commands_scripts_and_noscript_fallback(redis: RedisServer) -> None:
    client = RedisClient(parse_endpoint(redis.url.replace("/0", "/1")), IO_TIMEOUT)
    script = Script(client, "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}")
    with trio.fail_after(IO_TIMEOUT):
        assert await client.call("SET", "greeting", "hi") == "OK"
        assert await client.call("GET", "greeting") == b"hi"
        first = await script(keys=["n"], args=["x"])  # NOSCRIPT: sent in full once
        second = await script(keys=["n"], args=["y"])  # then by SHA
        await client.call("SCRIPT", "FLUSH")
        third = await script(keys=["n"], args=["z"])  # Redis forgot it: in full again
        with pytest.raises(ReplyError, match="WRONGTYPE"):
            await client.call("LPUSH", "greeting", "x")
        piped = await client.pipeline([("INCR", "n"), ("LPUSH", "greeting", "x"), ("GET", "greeting")])
        db0 = await RedisClient(parse_endpoint(redis.url), IO_TIMEOUT).call("EXISTS", "greeting")
        await client.aclose()
    assert (first, second, third) == ([b"n", b"x", 1], [b"n", b"y", 2], [b"n", b"z", 3])
    assert piped[0] == 4 and isinstance(piped[1], ReplyError) and piped[2] == b"hi"  # errors in place, in order
    assert db0 == 0  # SELECT put the first client in database 1


async def test_a_stalled_connection_times_out_and_is_never_reused(tmp_path: Path) -> None:
    """A server that reads and never answers, then answers late: the late reply must not be taken for the next one."""
    release = trio.Event()
    connections = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        mine = connections
        while data := await stream.receive_some(65536):
            if mine == 1:
                await release.wait()
                await stream.send_all(b"+LATE\r\n")
            else:
                await stream.send_all(b"+FRESH\r\n" * data.count(b"*"))

    with trio.fail_after(IO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            port = listener.socket.getsockname()[1]
            client = RedisClient(RedisEndpoint(port=port), timeout=0.2)
            with pytest.raises(trio.TooSlowError):
                await client.call("PING")
            release.set()
            assert await client.call("PING") == "FRESH"
            assert connections == 2
            await client.aclose()
            nursery.cancel_scope.cancel()

"""The RESP2 reader: every reply kind, whole or trickled byte by byte, and a long reply in pieces."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from kioskd.backend.resp import ReplyError, _Reader, encode_command

WIRE = b"+OK\r\n-NOSCRIPT no script\r\n:42\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n*3\r\n$1\r\na\r\n*1\r\n:7\r\n$0\r\n\r\n"


def expected() -> list[object]:
    return ["OK", "NOSCRIPT no script", 42, b"he\r\no", None, None, [b"a", [7], b""]]


async def read_all(pieces: list[bytes], n: int) -> list[object]:
    send, receive = trio.testing.memory_stream_one_way_pair()
    reader = _Reader(receive)  # type: ignore[arg-type]
    out: list[object] = []

    async def feed() -> None:
        for piece in pieces:
            await send.send_all(piece)
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        for _ in range(n):
            reply = await reader.reply()
            out.append(str(reply) if isinstance(reply, ReplyError) else reply)
    return out


@pytest.mark.parametrize("piece", [len(WIRE), 1, 3], ids=["whole", "bytewise", "threes"])
async def test_every_reply_kind(piece: int) -> None:
    pieces = [WIRE[i : i + piece] for i in range(0, len(WIRE), piece)]
    with trio.fail_after(10):
        assert await read_all(pieces, 7) == expected()


async def test_a_long_array_arriving_in_pieces() -> None:
    items = [b"x" * (i % 50) for i in range(20_000)]
    wire = b"*%d\r\n" % len(items) + b"".join(b"$%d\r\n%s\r\n" % (len(i), i) for i in items) + b":1\r\n"
    with trio.fail_after(10):
        assert await read_all([wire[i : i + 4096] for i in range(0, len(wire), 4096)], 2) == [items, 1]


async def test_garbage_is_a_connection_error() -> None:
    send, receive = trio.testing.memory_stream_one_way_pair()
    await send.send_all(b"?what\r\n")
    with trio.fail_after(10), pytest.raises(ConnectionError, match="not a RESP reply: b'\\?what'"):
        await _Reader(receive).reply()  # type: ignore[arg-type]


def test_commands_are_bulk_string_arrays() -> None:
    wire = b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$3\r\n0.5\r\n$2\r\n\r\n\r\n"
    assert encode_command(["SET", "k", 1, 0.5, b"\r\n"]) == wire

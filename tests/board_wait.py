"""Waiting on the kiosk's StatusBoard by event, not by polling (polling costs real time under MockClock)."""

from __future__ import annotations

from collections.abc import Callable

import trio

from kioskd.state import Status, StatusBoard


async def wait_for_status(board: StatusBoard, predicate: Callable[[Status], bool]) -> float:
    """Return the Trio time at which ``predicate(board.status)`` first holds (now, if it already does)."""
    if predicate(board.status):
        return trio.current_time()
    seen = trio.Event()
    when: list[float] = []

    def listener(status: Status) -> None:
        if predicate(status) and not seen.is_set():
            when.append(trio.current_time())
            seen.set()

    unlisten = board.listen(listener)
    try:
        await seen.wait()
    finally:
        unlisten()
    return when[0]

"""kioskd.hardware.handoff: work posted from a real thread runs on the Trio thread; after Trio, dropped."""

from __future__ import annotations

import threading

import trio

from kioskd.hardware.handoff import ToTrio


async def test_posted_work_runs_on_the_trio_thread_in_order() -> None:
    to_trio = ToTrio()
    got: list[tuple[int, int]] = []
    done = trio.Event()

    def record(i: int) -> None:
        got.append((i, threading.get_ident()))
        if i == 99:
            done.set()

    def from_thread() -> None:
        for i in range(100):
            to_trio.post(record, i)

    thread = threading.Thread(target=from_thread)
    with trio.fail_after(5):
        thread.start()
        await done.wait()
    thread.join()
    assert [i for i, _ in got] == list(range(100))
    assert {ident for _, ident in got} == {threading.get_ident()}
    assert to_trio.alive


def test_after_trio_has_exited_posts_are_dropped_without_raising() -> None:
    handoffs: list[ToTrio] = []

    async def main() -> None:
        handoffs.append(ToTrio())

    trio.run(main)
    ran: list[int] = []
    handoffs[0].post(ran.append, 1)
    handoffs[0].post(ran.append, 2)
    assert ran == [] and not handoffs[0].alive

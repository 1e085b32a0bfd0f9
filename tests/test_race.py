"""kioskd.service.race in virtual time (MockClock, autojump 0): the first to claim wins, exact times."""

from __future__ import annotations

import itertools
import random

import trio
import trio.testing

from kioskd.backoff import Backoff
from kioskd.service.race import Race

INTERVAL, SLOTS = 0.25, 8


def race() -> Race[str]:
    return Race[str](interval=INTERVAL, slots=SLOTS, backoff=Backoff(0.1, 0.5, rng=random.Random(1)))


async def test_a_late_attempt_wins_over_hanging_ones_and_they_are_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: list[float] = []
    cancelled: list[int] = []

    async def attempt(r: Race[str]) -> None:
        n = len(started)
        started.append(trio.current_time())
        try:
            if n < 3:
                await trio.sleep_forever()  # a dead network
            if r.claim():
                r.value = f"attempt {n}"
        except trio.Cancelled:
            cancelled.append(n)
            raise

    t0 = trio.current_time()
    with trio.fail_after(10):
        assert await race().run(attempt, deadline=t0 + 5) == "attempt 3"
    assert [t - t0 for t in started] == [0.0, INTERVAL, 2 * INTERVAL, 3 * INTERVAL]
    assert sorted(cancelled) == [0, 1, 2]
    assert trio.current_time() - t0 == 3 * INTERVAL


async def test_fast_failures_are_paced_by_the_backoff_and_the_deadline_ends_the_race(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: list[float] = []

    async def attempt(r: Race[str]) -> None:
        started.append(trio.current_time())
        r.failed("refused")

    r = race()
    t0 = trio.current_time()
    with trio.fail_after(10):
        assert await r.run(attempt, deadline=t0 + 2) is None
    assert r.last_reason == "refused"
    assert trio.current_time() - t0 == 2
    expected = Backoff(0.1, 0.5, rng=random.Random(1))
    gaps = [b - a for a, b in itertools.pairwise(started)]
    for gap in gaps:
        assert abs(gap - max(INTERVAL, expected.next_delay())) < 1e-9


async def test_a_stop_ends_the_race_at_once_and_a_wait_delays_the_next_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: list[float] = []

    async def attempt(r: Race[str]) -> None:
        started.append(trio.current_time())
        if len(started) == 1:
            r.failed("429", wait=3.0)
        else:
            r.failed("401", stop=True)

    t0 = trio.current_time()
    with trio.fail_after(10):
        assert await race().run(attempt, deadline=t0 + 10) is None
    assert [t - t0 for t in started] == [0.0, 3.0]
    assert trio.current_time() - t0 == 3.0

"""Racing attempts: start one every interval, at most a few in flight; the first to claim wins.

The supervisor resumes a dropped conversation this way, so an attempt hanging on a dead
network cannot hold the kiosk back: one started after the network's return wins within
an interval plus its setup. A :class:`Race` knows nothing of URLs or sessions; an
attempt is any ``async def attempt(race)`` that calls :meth:`Race.claim` at the moment
it succeeds (for a connection: when the handshake is done, before a conversation
starts) and sets :attr:`Race.value` once it has its result, or calls :meth:`Race.failed`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

from kioskd.backoff import Backoff

__all__ = ["Race"]

T = TypeVar("T")


class Race(Generic[T]):
    """One race; see the module docstring. ``interval`` apart, ``slots`` at most in flight.

    ``slots * interval`` should be at least an attempt's timeout, so a slot is always free.
    Attempts that fail fast (refused, unreachable) are paced by ``backoff``.
    """

    def __init__(self, *, interval: float, slots: int, backoff: Backoff) -> None:
        self.interval = interval
        self.slots = slots
        self.backoff = backoff
        #: the winner's result (set by the winning attempt)
        self.value: T | None = None
        #: why the latest attempt failed (for the status board when the race is lost)
        self.last_reason = "no attempt finished"
        self._winner: trio.CancelScope | None = None
        self._scopes: dict[trio.lowlevel.Task, trio.CancelScope] = {}
        self._changed = trio.Event()
        self._not_before = 0.0
        self._stop = False

    def claim(self) -> bool:
        """True for the first caller: it wins and every other attempt is cancelled."""
        if self._winner is not None or self._stop:
            return False
        scope = self._scopes.get(trio.lowlevel.current_task())
        if scope is None:
            return False
        self._winner = scope
        for other in self._scopes.values():
            if other is not scope:
                other.cancel()
        self._changed.set()
        return True

    def won_by_current(self) -> bool:
        """True when the calling attempt is the winner."""
        return self._winner is not None and self._scopes.get(trio.lowlevel.current_task()) is self._winner

    def failed(self, reason: str, *, wait: float | None = None, stop: bool = False) -> None:
        """An attempt failed; ``wait`` (e.g. Retry-After) delays the next one, ``stop`` ends the race."""
        self.last_reason = reason
        if wait is not None:
            self._not_before = max(self._not_before, trio.current_time() + wait)
        self._stop = self._stop or stop
        self._changed.set()

    async def run(self, attempt: Callable[[Race[T]], Awaitable[None]], deadline: float) -> T | None:
        """Start attempts until one wins or ``deadline``/a stop (then None).

        The winner's task runs on (e.g. a whole conversation) before this returns its value.
        """
        async with trio.open_nursery() as nursery:
            next_launch = trio.current_time()
            while True:
                self._changed = trio.Event()  # before looking: a change from here on is not missed
                now = trio.current_time()
                if self._winner is not None or self._stop or now >= deadline:
                    break
                if len(self._scopes) < self.slots and now >= max(next_launch, self._not_before):
                    nursery.start_soon(self._one, attempt)
                    await trio.lowlevel.checkpoint()  # let it register its scope (it may finish already)
                    next_launch = now + self.interval
                with trio.move_on_at(min(max(next_launch, self._not_before), deadline)):
                    await self._changed.wait()
            if self._winner is None:
                nursery.cancel_scope.cancel()
        return self.value

    async def _one(self, attempt: Callable[[Race[T]], Awaitable[None]]) -> None:
        task = trio.lowlevel.current_task()
        scope = trio.CancelScope()
        self._scopes[task] = scope
        try:
            with scope:
                await attempt(self)
                if not self.won_by_current():
                    # failed fast: pace the next attempt by the backoff
                    self._not_before = max(self._not_before, trio.current_time() + self.backoff.next_delay())
                else:
                    self.backoff.reset()
        finally:
            if self._scopes.get(task) is not self._winner:
                del self._scopes[task]
            self._changed.set()

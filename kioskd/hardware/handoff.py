"""The one thread → Trio hand-off: blocking libraries' threads give work to Trio without waiting.

PortAudio device threads and gpiozero's callback thread must never block on Trio, and
must not raise once Trio has exited. :class:`ToTrio` wraps ``TrioToken.run_sync_soon``
for exactly that: create it on the Trio thread, call :meth:`ToTrio.post` from any thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVarTuple, Unpack

import trio

__all__ = ["ToTrio"]

Ts = TypeVarTuple("Ts")


class ToTrio:
    """Runs ``fn(*args)`` on the Trio thread soon, from any thread, never blocking it."""

    def __init__(self, token: trio.lowlevel.TrioToken | None = None) -> None:
        """``token`` defaults to the current run's (so create it on the Trio thread)."""
        self._token = token if token is not None else trio.lowlevel.current_trio_token()
        #: False once Trio has exited: later posts are dropped
        self.alive = True

    def post(self, fn: Callable[[Unpack[Ts]], object], *args: *Ts) -> None:
        """Queue ``fn(*args)`` for the Trio thread; after Trio has exited, drop it (and every later post)."""
        if not self.alive:
            return
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            self.alive = False

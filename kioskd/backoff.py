"""Exponential backoff with full jitter (AWS architecture blog's "full jitter")."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Waits of ``uniform(0, min(cap, base * 2**attempt))``; :meth:`reset` after a success.

    Pass ``rng=random.Random(seed)`` for repeatable waits in tests.
    """

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def ceiling(self) -> float:
        """The largest wait the next call to :meth:`next_delay` may return."""
        return min(self.cap, self.base * 2.0 ** min(self.attempt, 62))

    def next_delay(self) -> float:
        """The wait before the next try; each call raises the ceiling until it reaches ``cap``."""
        delay = self.rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Back to the first, shortest waits (call after a success)."""
        self.attempt = 0

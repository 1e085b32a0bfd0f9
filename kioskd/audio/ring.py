"""A fixed-size ring of int16 samples keeping the most recent audio (pure, no locks).

The microphone pre-roll lives in two of these: the capture thread keeps the device's raw
samples in one while nothing listens (no hand-off to Trio at all), and the engine keeps
the processed 16 kHz frames in another while frames flow. A write is one or two slice
copies into a buffer allocated once; nothing is allocated per write.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SampleRing"]


class SampleRing:
    """The last ``capacity`` int16 samples written (older samples are overwritten)."""

    def __init__(self, capacity: int) -> None:
        """An empty ring holding at most ``capacity`` samples (0: keeps nothing)."""
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._buf = np.zeros(capacity, dtype=np.int16)
        self._end = 0  # index just past the newest sample
        self._size = 0

    def __len__(self) -> int:
        """Samples held now (at most ``capacity``)."""
        return self._size

    def write(self, samples: np.ndarray) -> None:
        """Append ``samples`` (1-D int16 or anything reshaping to it); the oldest fall out."""
        cap = self.capacity
        s = samples.reshape(-1)
        n = len(s)
        if cap == 0 or n == 0:
            return
        if n >= cap:
            self._buf[:] = s[n - cap :]
            self._end, self._size = 0, cap
            return
        end = self._end
        first = min(n, cap - end)
        self._buf[end : end + first] = s[:first]
        if first < n:
            self._buf[: n - first] = s[first:]
        self._end = (end + n) % cap
        self._size = min(cap, self._size + n)

    def snapshot(self, limit: int | None = None) -> np.ndarray:
        """A copy of the newest ``limit`` samples (all held if None), oldest first."""
        n = self._size if limit is None else max(0, min(limit, self._size))
        start = self._end - n
        if start >= 0:
            return self._buf[start : self._end].copy()
        return np.concatenate([self._buf[start:], self._buf[: self._end]])

    def clear(self) -> None:
        """Forget everything held."""
        self._end = self._size = 0

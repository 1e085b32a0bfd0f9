"""Adaptive playout (jitter) buffer for agent audio (pure: time is passed in).

Agent audio arrives in bursts, usually faster than real time (a 2 s reply may arrive
within 300 ms); that is not jitter. What matters is whether the buffer runs dry *in the
middle of a reply*. The rules:

* **Pre-buffering.** Playout (re)starts once the queued audio reaches the target depth,
  or once no audio has arrived for ``target_ms`` (a reply shorter than the target, or
  the tail of a stream that has gone quiet: waiting longer would not fill it).
* **Underrun.** When playout runs dry the buffer remembers when (the time its last
  queued sample plays, ``now`` of a pull being the time its first sample plays). If audio arrives again
  within :data:`UNDERRUN_WINDOW_S` of that moment the reply was still in progress: that
  is an underrun. The target grows by :data:`UNDERRUN_GROWTH` (capped at ``max_ms``)
  and the buffer pre-buffers to the new target before resuming. Audio arriving later than
  the window is a new reply (the user had to speak in between), not an underrun.
* **Steady playout.** Every :data:`STEADY_PLAYOUT_S` of audio played without an underrun
  multiplies the target by :data:`STEADY_DECAY` (floored at ``min_ms``).
* **Interruption.** Everything with ``event_id`` ≤ the interruption's id is discarded,
  queued or arriving later. If it was audible, the next pull starts with a ``fade_ms``
  fade-out of the audio that would have played next (so the first faded sample continues
  the waveform: no click), then silence until newer audio pre-buffers.

The learned target survives :meth:`JitterBuffer.reset` (it describes the network, not the
conversation); counters are cumulative.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

DEFAULT_MIN_MS = 20
"""Lowest target depth the buffer adapts down to."""
DEFAULT_MAX_MS = 400
"""Highest target depth the buffer adapts up to."""
DEFAULT_START_MS = 60
"""Initial target depth."""
DEFAULT_FADE_MS = 5
"""Length of the fade-out after an interruption."""

UNDERRUN_WINDOW_S = 0.5
"""Audio arriving within this long after running dry means the reply was in progress."""
UNDERRUN_GROWTH = 1.5
"""Target multiplier on an underrun."""
STEADY_PLAYOUT_S = 10.0
"""Seconds of playout without an underrun after which the target is lowered one step."""
STEADY_DECAY = 0.75
"""Target multiplier after each steady period."""


class JitterBuffer:
    """Adaptive playout buffer of int16 mono samples at one fixed rate."""

    def __init__(
        self,
        rate: int,
        *,
        min_ms: int = DEFAULT_MIN_MS,
        max_ms: int = DEFAULT_MAX_MS,
        start_ms: int = DEFAULT_START_MS,
        fade_ms: int = DEFAULT_FADE_MS,
    ) -> None:
        """Create an empty buffer for audio at ``rate`` Hz."""
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if not 0 < min_ms <= start_ms <= max_ms:
            raise ValueError(
                f"need 0 < min_ms <= start_ms <= max_ms, got {min_ms}, {start_ms}, {max_ms}"
            )
        if fade_ms < 0:
            raise ValueError(f"fade_ms must be >= 0, got {fade_ms}")
        self.rate = rate
        self.min_ms = float(min_ms)
        self.max_ms = float(max_ms)
        self.fade_samples = round(fade_ms * rate / 1000)
        self._steady_period = round(STEADY_PLAYOUT_S * rate)
        self._target_ms = float(start_ms)
        self.underruns = 0
        self.dropped_events = 0
        self.discarded_samples = 0
        self.played_samples = 0
        self._queue: deque[tuple[int, np.ndarray]] = deque()
        self._head_offset = 0
        self._queued = 0
        self._started = False
        self._fade = np.zeros(0, dtype=np.int16)
        self._fade_pos = 0
        self._interrupted_id: int | None = None
        self._dry_at: float | None = None
        self._last_push: float | None = None
        self._steady = 0

    # --- state -------------------------------------------------------------------------

    @property
    def target_ms(self) -> float:
        """Current target depth in milliseconds."""
        return self._target_ms

    @property
    def depth_ms(self) -> float:
        """Queued (not yet played) audio in milliseconds."""
        return self._queued * 1000.0 / self.rate

    @property
    def playing(self) -> bool:
        """True while audible audio is queued or a fade-out is pending."""
        return self._queued > 0 or self._fade_pos < len(self._fade)

    @property
    def started(self) -> bool:
        """True while playing out (False while pre-buffering or idle)."""
        return self._started

    def stats(self) -> dict[str, float | int]:
        """Counters and levels for status reports."""
        return {
            "target_ms": self._target_ms,
            "depth_ms": self.depth_ms,
            "underruns": self.underruns,
            "dropped_events": self.dropped_events,
            "discarded_ms": self.discarded_samples * 1000.0 / self.rate,
            "played_ms": self.played_samples * 1000.0 / self.rate,
        }

    def _target_samples(self) -> int:
        return math.ceil(self._target_ms * self.rate / 1000.0 - 1e-9)

    # --- input -------------------------------------------------------------------------

    def push(self, event_id: int, samples: np.ndarray, now: float) -> bool:
        """Queue agent audio; False (dropped) if ``event_id`` was interrupted."""
        if self._interrupted_id is not None and event_id <= self._interrupted_id:
            self.dropped_events += 1
            return False
        s = np.asarray(samples, dtype=np.int16).reshape(-1)
        if len(s) == 0:
            return True
        if self._dry_at is not None:
            if now - self._dry_at <= UNDERRUN_WINDOW_S:
                self._on_underrun()
            self._dry_at = None
        self._queue.append((event_id, s))
        self._queued += len(s)
        self._last_push = now
        return True

    def _on_underrun(self) -> None:
        self.underruns += 1
        self._target_ms = min(self.max_ms, self._target_ms * UNDERRUN_GROWTH)
        self._steady = 0

    def interrupt(self, event_id: int, now: float) -> None:
        """Discard all audio with id ≤ ``event_id`` (queued and late); fade out if audible."""
        if self._interrupted_id is None or event_id > self._interrupted_id:
            self._interrupted_id = event_id
        self._dry_at = None
        if not self._queue:
            return
        head_dead = self._queue[0][0] <= event_id
        if head_dead and self._started and self.fade_samples > 0:
            self._fade = self._make_fade(event_id)
            self._fade_pos = 0
        kept: deque[tuple[int, np.ndarray]] = deque()
        for i, (eid, chunk) in enumerate(self._queue):
            if eid > event_id:
                kept.append((eid, chunk))
                continue
            dead = len(chunk) - (self._head_offset if i == 0 else 0)
            self.discarded_samples += dead
            self._queued -= dead
        if head_dead:
            self._head_offset = 0
            self._started = False  # newer audio (if any) pre-buffers afresh
        self._queue = kept

    def _make_fade(self, event_id: int) -> np.ndarray:
        """The next ``fade_samples`` of the dead audio, ramped down (no click)."""
        parts: list[np.ndarray] = []
        have = 0
        for i, (eid, chunk) in enumerate(self._queue):
            if eid > event_id or have >= self.fade_samples:
                break
            part = chunk[self._head_offset :] if i == 0 else chunk
            part = part[: self.fade_samples - have]
            parts.append(part)
            have += len(part)
        src = np.concatenate(parts).astype(np.float64)
        if len(src) < self.fade_samples:  # hold the last value: the ramp still ends at 0
            src = np.pad(src, (0, self.fade_samples - len(src)), mode="edge")
        n = self.fade_samples
        gain = (n - np.arange(n)) / (n + 1.0)
        return np.round(src * gain).astype(np.int16)

    def reset(self) -> None:
        """Forget queued audio, fades and interruptions (new conversation)."""
        self._queue.clear()
        self._head_offset = 0
        self._queued = 0
        self._started = False
        self._fade = np.zeros(0, dtype=np.int16)
        self._fade_pos = 0
        self._interrupted_id = None
        self._dry_at = None
        self._last_push = None
        self._steady = 0

    # --- output ------------------------------------------------------------------------

    def pull(self, n: int, now: float) -> np.ndarray:
        """Exactly ``n`` int16 samples to play next (zeros while pre-buffering or dry)."""
        out = np.zeros(max(n, 0), dtype=np.int16)
        pos = 0
        if self._fade_pos < len(self._fade):
            k = min(len(out), len(self._fade) - self._fade_pos)
            out[:k] = self._fade[self._fade_pos : self._fade_pos + k]
            self._fade_pos += k
            pos = k
        if pos < len(out) and not self._started and self._queued > 0:
            idle = self._last_push is not None and now - self._last_push >= self._target_ms / 1000
            if self._queued >= self._target_samples() or idle:
                self._started = True
        if pos < len(out) and self._started:
            took = self._take_into(out, pos)
            self._count_playout(took)
            if self._queued == 0:
                self._started = False
                self._dry_at = now + (pos + took) / self.rate  # when the last sample plays
        return out

    def _take_into(self, out: np.ndarray, pos: int) -> int:
        start = pos
        while pos < len(out) and self._queue:
            _, chunk = self._queue[0]
            k = min(len(out) - pos, len(chunk) - self._head_offset)
            out[pos : pos + k] = chunk[self._head_offset : self._head_offset + k]
            pos += k
            self._head_offset += k
            if self._head_offset == len(chunk):
                self._queue.popleft()
                self._head_offset = 0
        took = pos - start
        self._queued -= took
        return took

    def _count_playout(self, took: int) -> None:
        self.played_samples += took
        self._steady += took
        while self._steady >= self._steady_period:
            self._steady -= self._steady_period
            self._target_ms = max(self.min_ms, self._target_ms * STEADY_DECAY)

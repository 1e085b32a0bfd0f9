"""The speaker path: one lock-owning object shared by the Trio side and the playback thread.

:class:`Speaker` holds everything both sides touch: the :class:`JitterBuffer`, a local
sound mixed on top (cues), volume and mute, the device's rate, until when the last
audible sample is still in the device, and the far-end (speaker) periods kept for the
echo canceller. ``Playback`` (Trio thread) calls
:meth:`~Speaker.push`, :meth:`~Speaker.interrupt`, :meth:`~Speaker.reset` and reads
:attr:`~Speaker.speaking`; the playback thread calls :meth:`~Speaker.pull` and
:meth:`~Speaker.wait`. Every method holds the lock only for a copy.

**Idle costs nothing.** Once nothing is queued, at least :data:`DEVICE_LATENCY_PERIODS`
periods of silence followed the last audible one (the device's buffer holds only
silence: no pop when it stops) and that audio has left the device, :meth:`~Speaker.pull`
returns None: the thread pauses the stream and sleeps in :meth:`~Speaker.wait` until the next
push. A reply pre-buffers for the jitter target (≥ ``jitter_min_ms``) anyway, and the
thread is back within one period of the push, so the first reply is not later.

Clock: the jitter buffer runs on ``time.monotonic()`` on both sides (pushes and pulls).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from kioskd.audio.jitter import JitterBuffer

__all__ = ["DEVICE_LATENCY_PERIODS", "MAX_FAR_PERIODS", "Speaker"]

DEVICE_LATENCY_PERIODS = 2
"""Periods of audio assumed still in the device after a write (for ``speaking``)."""
MAX_FAR_PERIODS = 50
"""Bound on far-end periods waiting for the echo canceller (500 ms of 10 ms periods)."""


class Speaker:
    """Jitter buffer, device rate, audible-until and far-end periods behind one lock."""

    def __init__(
        self,
        new_jitter: Callable[[int], JitterBuffer],
        rate: int,
        *,
        volume: float = 1.0,
        keep_far: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A speaker at ``rate`` until a device says otherwise; ``keep_far`` for echo cancellation."""
        self._new_jitter = new_jitter
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._jitter = new_jitter(rate)
        self._rate = rate
        self._audible_until = 0.0
        self._silent_periods = DEVICE_LATENCY_PERIODS  # written since the last audible one
        self._sound = np.zeros(0, dtype=np.int16)  # a local sound being mixed in (device rate)
        self.volume = volume
        """Gain 0.0–1.0 for everything played (agent and sounds); may change at any time."""
        self.muted = False
        """True: silence is played (the agent's audio is still received and timed)."""
        self._far: deque[np.ndarray] | None = deque(maxlen=MAX_FAR_PERIODS) if keep_far else None
        self._far_rate = rate
        self.ok = False
        """True while the output device is open (set by the engine on open/failure)."""

    # ------------------------------------------------------------------ Trio side

    @property
    def rate(self) -> int:
        """The device's sample rate (what :meth:`push` expects)."""
        return self._rate

    @property
    def speaking(self) -> bool:
        """True while audio is queued or still audible in the device."""
        return self.audible_within(0.0)

    def audible_within(self, seconds: float) -> bool:
        """True while audio is queued, or was audible less than ``seconds`` ago."""
        with self._lock:
            return self._has_audio() or self._clock() < self._audible_until + seconds

    def _has_audio(self) -> bool:
        return self._jitter.playing or len(self._sound) > 0

    def play_sound(self, samples: np.ndarray) -> None:
        """Mix ``samples`` (mono, at :attr:`rate`) in on top of any agent audio; replaces a sound still playing."""
        with self._lock:
            self._sound = np.asarray(samples, dtype=np.int16).reshape(-1)
            self._wake.notify_all()

    def push(self, event_id: int, samples: np.ndarray) -> None:
        """Queue agent audio at :attr:`rate` (dropped if ``event_id`` was interrupted); wakes the thread."""
        with self._lock:
            self._jitter.push(event_id, samples, self._clock())
            self._wake.notify_all()

    def interrupt(self, event_id: int) -> None:
        """Drop audio with id ≤ ``event_id``, queued or late (a short fade if audible)."""
        with self._lock:
            self._jitter.interrupt(event_id, self._clock())
            self._audible_until = 0.0

    def reset(self) -> None:
        """Forget queued audio, fades and interruptions (a new playback)."""
        with self._lock:
            self._jitter.reset()

    def stats(self) -> dict[str, float | int]:
        """The jitter buffer's counters and levels."""
        with self._lock:
            return dict(self._jitter.stats())

    def take_far(self) -> tuple[list[np.ndarray], int]:
        """The far-end periods written since the last call (mono, as played) and their rate."""
        with self._lock:
            if not self._far:
                return [], self._far_rate
            periods = list(self._far)
            self._far.clear()
            return periods, self._far_rate

    # ------------------------------------------------------------------ device side

    def opened(self, rate: int) -> None:
        """The device opened at ``rate``: a new jitter buffer if the rate changed."""
        with self._lock:
            if rate != self._rate:
                self._jitter = self._new_jitter(rate)
                self._rate = rate
            self.ok = True

    def failed(self) -> None:
        """The device is gone: nothing queued is audible any more."""
        with self._lock:
            self.ok = False
            self._jitter.reset()
            self._sound = self._sound[:0]
            self._audible_until = 0.0

    def pull(self, frames: int, rate: int, channels: int) -> np.ndarray | None:
        """The next device period (interleaved int16), or None when the speaker is idle.

        Called by the playback thread. Idle: nothing queued, no fade pending and the last
        audible sample out of the device; the thread may then pause until :meth:`wait`
        returns.
        """
        now = self._clock()
        with self._lock:
            if rate != self._rate:
                self._jitter = self._new_jitter(rate)
                self._rate = rate
            audible = self._has_audio()
            if not audible and self._silent_periods >= DEVICE_LATENCY_PERIODS and now >= self._audible_until:
                return None  # the device holds only silence and nothing is audible
            mono = self._jitter.pull(frames, now)
            if len(self._sound):
                part, self._sound = self._sound[:frames], self._sound[frames:]
                mixed = mono.astype(np.int32)
                mixed[: len(part)] += part
                mono = np.clip(mixed, -32768, 32767).astype(np.int16)
            if audible:
                self._audible_until = now + (DEVICE_LATENCY_PERIODS + 1) * frames / rate
                self._silent_periods = 0
            else:
                self._silent_periods += 1
        gain = 0.0 if self.muted else self.volume
        if gain != 1.0:
            mono = np.round(mono * gain).astype(np.int16)
        if self._far is not None:
            with self._lock:
                self._far.append(mono)
                self._far_rate = rate
        return np.repeat(mono, channels) if channels > 1 else mono

    def wait(self, stop: threading.Event) -> None:
        """Block the playback thread until audio is queued or ``stop`` is set (see :meth:`wake`)."""
        with self._lock:
            while not stop.is_set() and not self._has_audio():
                self._wake.wait()

    def wake(self) -> None:
        """Wake a :meth:`wait` (the thread is being stopped)."""
        with self._lock:
            self._wake.notify_all()

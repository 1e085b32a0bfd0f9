"""Pacing a device loop in real time when the device has no clock (pure: clock and sleep injected).

Clockless devices (ALSA ``type file`` PCMs, WAV files) return at once from reads and
writes; :class:`Pacer` then paces the loop against the monotonic clock so the same code
serves real and clockless devices.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kioskd.config import Pacing

__all__ = ["Pacer"]

log = logging.getLogger(__name__)

DETECT_SECONDS = 0.3
"""Audio time over which ``auto`` pacing measures whether the device blocks."""
BLOCKED_FRACTION = 0.2
"""A device that blocked for less than this share of the audio time has no clock."""
DETECT_SLACK_PERIODS = 3
"""While detecting, sleep only when this many periods ahead of the monotonic clock."""
MAX_LAG_SECONDS = 0.2
"""A paced loop further behind than this re-anchors instead of bursting to catch up."""


class Pacer:
    """Keeps a device loop in real time on the monotonic clock when the device has none.

    Call :meth:`io_done` after every read/write with the frames moved and the seconds the
    call itself took. ``clock`` mode always paces; ``device`` never does; ``auto``
    watches the first :data:`DETECT_SECONDS` of audio: a device that blocked for less
    than :data:`BLOCKED_FRACTION` of it has no clock and is paced from then on (meanwhile
    it is paced loosely, with :data:`DETECT_SLACK_PERIODS` of slack, so a real device
    never waits on us). Pure: the clock and sleep are injected.
    """

    def __init__(
        self,
        rate: int,
        period_frames: int,
        mode: Pacing = "auto",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Start the schedule now."""
        self.rate = rate
        self.mode: Pacing = mode
        self._clock = clock
        self._sleep = sleep
        self._slack = DETECT_SLACK_PERIODS * period_frames / rate
        self._t0 = clock()
        self._frames = 0  # since _t0 (the schedule)
        self._detect_frames = 0  # since the start (for ``auto``)
        self._blocked = 0.0

    def restart(self) -> None:
        """Start a new schedule now (after the loop deliberately stood still)."""
        self._t0, self._frames = self._clock(), 0

    @property
    def paced(self) -> bool | None:
        """Whether the loop is paced on the clock (None while ``auto`` is still deciding)."""
        return {"clock": True, "device": False}.get(self.mode)

    def io_done(self, frames: int, io_seconds: float) -> None:
        """Account for one I/O call; sleep if the loop runs ahead of real time."""
        if self.mode == "device":
            return
        self._frames += frames
        audio = self._frames / self.rate
        if self.mode == "auto":
            self._blocked += io_seconds
            self._detect_frames += frames
            heard = self._detect_frames / self.rate
            if heard >= DETECT_SECONDS:
                self.mode = "clock" if self._blocked < BLOCKED_FRACTION * heard else "device"
                log.debug("audio pacing decided mode=%s blocked=%.3f audio=%.3f", self.mode, self._blocked, heard)
                if self.mode == "device":
                    return
        now = self._clock()
        ahead = self._t0 + audio - now
        if ahead < -MAX_LAG_SECONDS:  # stalled (or a very slow device): start a new schedule
            self._t0, self._frames = now, 0
        elif ahead > (self._slack if self.mode == "auto" else 0.0):
            self._sleep(ahead)

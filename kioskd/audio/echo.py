"""Acoustic echo cancellation on 10 ms frames (WebRTC AEC3 via pywebrtc-audio).

The speaker signal (what is being played, resampled to the internal rate) goes in with
:meth:`EchoCanceller.far`, one 10 ms frame at a time, in the order the frames are handed to
the output device (silence included). Each microphone frame goes through
:meth:`EchoCanceller.near`, which pairs it with the oldest queued far frame (zeros if none
is queued) and returns the echo-reduced frame. Because far frames are queued when written
to the device and consumed when the microphone delivers, the far signal always *leads*
the near signal by about the output latency; AEC3's delay estimator finds the rest
(device, acoustic path). The far queue is bounded (:data:`MAX_FAR_BACKLOG_FRAMES`) so
clock drift between the two devices cannot grow it without limit.

If pywebrtc-audio cannot be imported the canceller logs a warning and passes audio
through unchanged (``active`` is False): the kiosk keeps working, with echo.
"""

from __future__ import annotations

import logging
from collections import deque
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger(__name__)



def _load_webrtc() -> ModuleType | None:
    try:
        import pywebrtc_audio
    except ImportError:  # pragma: no cover - exercised only where the wheel is missing
        return None
    return pywebrtc_audio


_webrtc = _load_webrtc()

DEFAULT_RATE = 16000
"""Rate the canceller runs at (the internal microphone rate)."""
FRAME_MS = 10
"""Frame duration AEC3 works on."""
MAX_FAR_BACKLOG_FRAMES = 50
"""Bound on queued far frames (500 ms); past it the oldest are dropped."""
STREAM_DELAY_MS = 0
"""Delay hint for AEC3; 0 leaves the delay to its estimator (the far queue keeps it causal)."""

AVAILABLE = _webrtc is not None
"""True when pywebrtc-audio (AEC3) is importable."""


class EchoCanceller:
    """Removes the speaker's echo from microphone frames."""

    def __init__(self, rate: int = DEFAULT_RATE, *, enabled: bool = True) -> None:
        """Create a canceller at ``rate`` Hz; ``enabled=False`` passes audio through."""
        if rate <= 0 or rate % 100:
            raise ValueError(f"rate must be a positive multiple of 100 Hz, got {rate}")
        self.rate = rate
        self.frame_samples = rate * FRAME_MS // 1000
        self.enabled = enabled
        self._far: deque[np.ndarray] = deque()
        self._silence = np.zeros(self.frame_samples, dtype=np.int16)
        self._aec: Any = None
        self.far_dropped = 0
        self.far_missing = 0
        self.frames = 0
        if enabled and _webrtc is None:
            log.warning("echo cancellation unavailable reason=pywebrtc_audio_not_installed")
        elif enabled and _webrtc is not None:
            self._aec = _webrtc.EchoCanceller(rate, 1, STREAM_DELAY_MS)

    @property
    def active(self) -> bool:
        """True when frames are actually echo-cancelled."""
        return self._aec is not None

    def _check(self, frame: np.ndarray, what: str) -> np.ndarray:
        f = np.asarray(frame, dtype=np.int16).reshape(-1)
        if len(f) != self.frame_samples:
            raise ValueError(
                f"{what} frame must be {self.frame_samples} samples (10 ms at {self.rate} Hz), "
                f"got {len(f)}"
            )
        return f

    def far(self, frame: np.ndarray) -> None:
        """Queue one 10 ms frame of the speaker signal (in playout order)."""
        if self._aec is None:
            return
        self._far.append(self._check(frame, "far").copy())
        if len(self._far) > MAX_FAR_BACKLOG_FRAMES:
            self._far.popleft()
            self.far_dropped += 1

    def near(self, frame: np.ndarray) -> np.ndarray:
        """Echo-reduce one 10 ms microphone frame (a new array)."""
        f = self._check(frame, "near")
        if self._aec is None:
            return f.copy()
        if self._far:
            far = self._far.popleft()
        else:
            far = self._silence
            self.far_missing += 1
        self.frames += 1
        out = self._aec.process(np.ascontiguousarray(f), far)
        return np.asarray(out, dtype=np.int16).reshape(-1)

    def reset(self) -> None:
        """Forget the far queue and AEC3's adapted state (e.g. after a device change)."""
        self._far.clear()
        if self._aec is not None:
            self._aec.reset()

    def stats(self) -> dict[str, int | bool]:
        """Counters for status reports."""
        return {
            "aec_active": self.active,
            "aec_far_queued": len(self._far),
            "aec_far_dropped": self.far_dropped,
            "aec_far_missing": self.far_missing,
        }

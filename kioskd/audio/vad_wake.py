"""Voice-activity wake: enough real speech, loud enough, starts a conversation.

:class:`WakeDetector` is pure (frames and times in, a bool out). It classifies each
**10 ms** frame (the audio contract's frame; webrtcvad accepts 10, 20 or 30 ms, and 10 ms
gives the earliest decision) as speech when all three hold:

* webrtcvad (``vad.aggressiveness``) says speech;
* the frame's level is at least ``vad.energy_floor_dbfs`` (a far-away voice, a quiet
  room: no wake);
* the frame's spectrum is not flat (spectral flatness ≤ :data:`MAX_SPECTRAL_FLATNESS`).
  webrtcvad calls any loud broadband noise "speech"; voiced speech is harmonic (flatness
  near 0), white noise sits near 0.56 and pink noise near 0.25 on 10 ms frames.

It wakes once at least ``vad.min_speech_ms`` of such frames fall within the last
``vad.window_ms`` — a cough (≈150 ms), a click train or a door slam does not get there.
The wake comes ``min_speech_ms`` (plus a frame or two) after the speech starts, so the
microphone pre-roll must be longer than that to keep the first syllables.

It never wakes on the kiosk's own voice: :meth:`WakeDetector.set_playback` turns it off
while the agent is audible and for ``vad.playback_tail_ms`` after (room echo), and
:meth:`WakeDetector.suppress_until` does the same for anything else (a chime).

:class:`VadWakeTrigger` is the thin adapter for ``AudioEngine.add_frame_listener``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable

import numpy as np
import webrtcvad

from kioskd.config import VadWakeConfig
from kioskd.state import Command, KioskState, StatusBoard

__all__ = ["FRAME_MS", "MAX_SPECTRAL_FLATNESS", "VadWakeTrigger", "WakeDetector", "frame_dbfs", "spectral_flatness"]

log = logging.getLogger(__name__)

#: Frame length the detector works on (the audio contract's frame).
FRAME_MS = 10
#: Rates webrtcvad supports.
VAD_RATES = (8000, 16000, 32000, 48000)
#: Frames whose power spectrum is flatter than this are noise, whatever webrtcvad says.
MAX_SPECTRAL_FLATNESS = 0.15
#: Level reported for digital silence.
SILENCE_DBFS = -120.0
#: Frame times closer than this count as the same instant (float rounding of timestamps).
_TIME_EPS = 1e-6


def frame_dbfs(frame: np.ndarray) -> float:
    """RMS level of an int16 frame in dB relative to full scale."""
    samples = frame.astype(np.float64)
    rms = math.sqrt(float(np.mean(samples * samples))) if samples.size else 0.0
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms / 32768.0))


def spectral_flatness(frame: np.ndarray) -> float:
    """Geometric over arithmetic mean of the (Hann-windowed) power spectrum, DC left out: 0 tonal … 1 white."""
    samples = frame.astype(np.float64)
    power = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))[1:] ** 2 + 1e-12
    return float(np.exp(np.mean(np.log(power))) / np.mean(power))


class WakeDetector:
    """Pure speech-wake decision on 10 ms int16 mono frames; ``now`` is the frame's time in seconds."""

    def __init__(
        self,
        config: VadWakeConfig,
        rate: int = 16000,
        *,
        max_flatness: float = MAX_SPECTRAL_FLATNESS,
    ) -> None:
        if rate not in VAD_RATES:
            raise ValueError(f"rate {rate} not supported by webrtcvad (use one of {VAD_RATES})")
        self.config = config
        self.rate = rate
        self.frame_samples = rate * FRAME_MS // 1000
        self.max_flatness = max_flatness
        self._vad = webrtcvad.Vad(config.aggressiveness)
        self._window = config.window_ms / 1000.0
        self._needed = math.ceil(config.min_speech_ms / FRAME_MS)  # speech frames in the window
        self._speech: deque[float] = deque()  # times of speech frames within the window
        self._playback = False
        self._quiet_until = -math.inf

    @property
    def speech_ratio(self) -> float:
        """Share of the window that was speech, 0–1 (a level for a meter or the LEDs)."""
        return min(1.0, len(self._speech) * FRAME_MS / self.config.window_ms)

    def is_speech(self, frame: np.ndarray) -> bool:
        """One frame's verdict: webrtcvad, energy floor and spectral flatness together."""
        if frame_dbfs(frame) < self.config.energy_floor_dbfs:
            return False
        if spectral_flatness(frame) > self.max_flatness:
            return False
        return bool(self._vad.is_speech(frame.tobytes(), self.rate))

    def feed(self, frame: np.ndarray, now: float) -> bool:
        """Take one frame; True (once) when the speech heard should start a conversation."""
        if frame.dtype != np.int16 or frame.shape != (self.frame_samples,):
            raise ValueError(f"expected {self.frame_samples} int16 samples, got {frame.dtype} {frame.shape}")
        if self.suppressed(now):
            self._speech.clear()
            return False
        while self._speech and self._speech[0] <= now - self._window + _TIME_EPS:
            self._speech.popleft()
        if self.is_speech(frame):
            self._speech.append(now)
        if len(self._speech) >= self._needed:
            self._speech.clear()
            return True
        return False

    def suppressed(self, now: float) -> bool:
        """True while the detector must not wake (playback, its tail, or an explicit suppression)."""
        return self._playback or now < self._quiet_until

    def suppress_until(self, t: float) -> None:
        """Do not wake before ``t`` (extends, never shortens, a running suppression)."""
        self._quiet_until = max(self._quiet_until, t)

    def set_playback(self, active: bool, now: float) -> None:
        """The kiosk's speaker is (not) playing: off while it plays and ``playback_tail_ms`` after."""
        if active:
            self._playback = True
            self._speech.clear()
        elif self._playback:
            self._playback = False
            self.suppress_until(now + self.config.playback_tail_ms / 1000.0)

    def reset(self) -> None:
        """Forget the speech heard so far (suppression and playback state are kept)."""
        self._speech.clear()
        self._vad = webrtcvad.Vad(self.config.aggressiveness)


class VadWakeTrigger:
    """``AudioEngine`` frame listener that sends ``Command.START`` when speech wakes an idle kiosk.

    Wiring::

        wake = VadWakeTrigger(config.vad, supervisor.send, board)
        engine.add_frame_listener(wake.on_frame)
        # whenever the speaker starts or stops being audible (playback.speaking):
        wake.playback_active(True) / wake.playback_active(False)

    With ``board`` given it listens only while ``board.status.state`` is idle; ``enabled``
    turns it off entirely (e.g. trigger mode "button"). ``speaking`` (e.g.
    ``lambda: engine.speaking``) is asked at every frame whether the speaker is audible:
    it covers every playback (the agent's last words after the conversation closed, a
    cue), not only what ``playback_active`` is told.
    """

    def __init__(
        self,
        config: VadWakeConfig,
        send: Callable[[Command], None],
        board: StatusBoard | None = None,
        *,
        rate: int = 16000,
        enabled: bool = True,
        speaking: Callable[[], bool] | None = None,
    ) -> None:
        self.detector = WakeDetector(config, rate)
        self.send = send
        self.board = board
        self.enabled = enabled
        self.speaking = speaking
        self._told_playback = False  # what playback_active said last
        self._playback_applied = False  # what the detector was last told
        self._was_idle = True

    def playback_active(self, active: bool) -> None:
        """The speaker started/stopped; applied at the next frame's time (the frame clock)."""
        self._told_playback = active

    def on_frame(self, frame: np.ndarray, t: float) -> None:
        """Frame listener: ``frame`` is 10 ms of int16 mono, ``t`` its time in seconds."""
        playing = self._told_playback or (self.speaking is not None and self.speaking())
        if playing != self._playback_applied:
            self.detector.set_playback(playing, t)
            self._playback_applied = playing
        idle = self.board is None or self.board.status.state == KioskState.IDLE
        if not (self.enabled and idle):
            if self._was_idle:
                self.detector.reset()  # a conversation's speech must not count after it
            self._was_idle = False
            return
        self._was_idle = True
        if self.detector.feed(frame, t):
            log.info("vad wake t=%.3f", t)
            self.send(Command.START)

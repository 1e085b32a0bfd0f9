"""Turn-taking logic of the simulated agent (pure: VAD decisions in, events out).

Audio is counted in 10 ms frames of received user audio, not in wall-clock time, so a
client that sends faster than real time gets the same decisions as one that streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np

__all__ = ["FRAME_MS", "EndOfSpeech", "FrameSplitter", "TurnDetector", "VadScoreWindow"]

FRAME_MS: Final = 10
#: Shorter bursts of speech than this are noise, not an utterance.
DEFAULT_MIN_UTTERANCE_MS: Final = 100


@dataclass(frozen=True)
class EndOfSpeech:
    """The user spoke ``speech_ms`` of VAD-speech and then fell silent."""

    speech_ms: int


@dataclass
class TurnDetector:
    """Speech followed by ``end_of_speech_ms`` of silence ends a user turn."""

    end_of_speech_ms: int = 600
    min_utterance_ms: int = DEFAULT_MIN_UTTERANCE_MS
    speech_ms: int = 0
    silence_ms: int = 0

    @property
    def in_speech(self) -> bool:
        """True while an utterance is under way (it had speech and has not ended)."""
        return self.speech_ms > 0

    def feed(self, is_speech: bool) -> EndOfSpeech | None:
        """Account one 10 ms frame; returns the end of an utterance when one ends here."""
        if is_speech:
            self.speech_ms += FRAME_MS
            self.silence_ms = 0
            return None
        if not self.in_speech:
            return None
        self.silence_ms += FRAME_MS
        if self.silence_ms < self.end_of_speech_ms:
            return None
        speech_ms, self.speech_ms, self.silence_ms = self.speech_ms, 0, 0
        if speech_ms < self.min_utterance_ms:
            return None
        return EndOfSpeech(speech_ms)


@dataclass
class VadScoreWindow:
    """Fraction of speech frames over windows of ``window_ms``; one score per full window."""

    window_ms: int = 100
    _frames: int = 0
    _speech: int = 0

    def feed(self, is_speech: bool) -> float | None:
        """Account one frame; returns the window's score when the window is full."""
        self._frames += 1
        self._speech += int(is_speech)
        if self._frames * FRAME_MS < self.window_ms:
            return None
        score = self._speech / self._frames
        self._frames = self._speech = 0
        return score


@dataclass
class FrameSplitter:
    """Cuts a stream of int16 samples into fixed-size frames, keeping the remainder."""

    frame_samples: int
    _pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))

    def feed(self, samples: np.ndarray) -> list[np.ndarray]:
        """Append samples; return every complete frame."""
        buf = np.concatenate([self._pending, samples.astype(np.int16)])
        count = len(buf) // self.frame_samples
        cut = count * self.frame_samples
        self._pending = buf[cut:]
        return [buf[i : i + self.frame_samples] for i in range(0, cut, self.frame_samples)]

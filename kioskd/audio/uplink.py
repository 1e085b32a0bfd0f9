"""Bounded microphone backlog with coalescing (pure: no clocks, no I/O).

The microphone produces one 10 ms frame at a time, whether or not the WebSocket can keep
up. Frames queue here. The sender normally takes ``chunk_ms`` at a time; when it fell
behind (a slow or stalled network) :meth:`UplinkBuffer.take` coalesces everything queued
into one message of up to ``max_message_ms``, so the backlog drains with fewer, larger
messages. The backlog is bounded by ``max_backlog_ms``: past it, non-speech frames are
dropped first (oldest first), then speech frames (oldest first). Nothing ever blocks.
"""

from __future__ import annotations

from collections import deque

import numpy as np

DEFAULT_FRAME_MS = 10
"""Duration of one pushed microphone frame."""
DEFAULT_CHUNK_MS = 20
"""Smallest message the sender is given."""
DEFAULT_MAX_MESSAGE_MS = 250
"""Largest message when coalescing a backlog."""
DEFAULT_MAX_BACKLOG_MS = 2000
"""Bound on queued audio; past it frames are dropped."""
DEFAULT_RATE = 16000
"""Sample rate of pushed frames."""


class UplinkBuffer:
    """FIFO of int16 microphone frames, each tagged speech / non-speech."""

    def __init__(
        self,
        *,
        frame_ms: int = DEFAULT_FRAME_MS,
        chunk_ms: int = DEFAULT_CHUNK_MS,
        max_message_ms: int = DEFAULT_MAX_MESSAGE_MS,
        max_backlog_ms: int = DEFAULT_MAX_BACKLOG_MS,
        rate: int = DEFAULT_RATE,
    ) -> None:
        """Create an empty backlog; sizes in milliseconds of audio at ``rate``."""
        if rate <= 0 or frame_ms <= 0:
            raise ValueError(f"rate and frame_ms must be positive, got {rate}, {frame_ms}")
        if not 0 < chunk_ms <= max_message_ms <= max_backlog_ms:
            raise ValueError(
                "need 0 < chunk_ms <= max_message_ms <= max_backlog_ms, "
                f"got {chunk_ms}, {max_message_ms}, {max_backlog_ms}"
            )
        self.rate = rate
        self.frame_samples = rate * frame_ms // 1000
        self.chunk_samples = rate * chunk_ms // 1000
        self.max_message_samples = rate * max_message_ms // 1000
        self.max_backlog_samples = rate * max_backlog_ms // 1000
        self._frames: deque[tuple[np.ndarray, bool]] = deque()
        self._queued = 0
        self._silent_frames = 0
        self._peak = 0
        self._dropped_speech = 0
        self._dropped_silence = 0
        self.messages = 0
        self.coalesced_messages = 0

    def _ms(self, samples: int) -> float:
        return samples * 1000.0 / self.rate

    @property
    def backlog_ms(self) -> float:
        """Audio queued now, in milliseconds."""
        return self._ms(self._queued)

    @property
    def peak_backlog_ms(self) -> float:
        """Largest backlog seen (after enforcing the bound)."""
        return self._ms(self._peak)

    @property
    def dropped_speech_ms(self) -> float:
        """Speech dropped to enforce the bound."""
        return self._ms(self._dropped_speech)

    @property
    def dropped_silence_ms(self) -> float:
        """Non-speech audio dropped to enforce the bound."""
        return self._ms(self._dropped_silence)

    def stats(self) -> dict[str, float]:
        """Counters for status reports."""
        return {
            "backlog_ms": self.backlog_ms,
            "peak_backlog_ms": self.peak_backlog_ms,
            "dropped_speech_ms": self.dropped_speech_ms,
            "dropped_silence_ms": self.dropped_silence_ms,
            "messages": float(self.messages),
            "coalesced_messages": float(self.coalesced_messages),
        }

    def push(self, frame: np.ndarray, speech: bool) -> None:
        """Queue one microphone frame; drops old frames past the bound (never blocks)."""
        f = np.array(frame, dtype=np.int16).reshape(-1)  # a copy: callers reuse buffers
        if len(f) == 0:
            return
        self._frames.append((f, bool(speech)))
        self._queued += len(f)
        if not speech:
            self._silent_frames += 1
        while self._queued > self.max_backlog_samples:
            self._drop_one()
        self._peak = max(self._peak, self._queued)

    def _drop_one(self) -> None:
        index = 0
        if self._silent_frames:
            index = next(i for i, (_, sp) in enumerate(self._frames) if not sp)
        frame, speech = self._frames[index]
        del self._frames[index]
        self._queued -= len(frame)
        if speech:
            self._dropped_speech += len(frame)
        else:
            self._silent_frames -= 1
            self._dropped_silence += len(frame)

    def _pop(self, limit: int) -> np.ndarray:
        parts: list[np.ndarray] = []
        have = 0
        while self._frames and (not parts or have + len(self._frames[0][0]) <= limit):
            frame, speech = self._frames.popleft()
            parts.append(frame)
            have += len(frame)
            if not speech:
                self._silent_frames -= 1
        self._queued -= have
        self.messages += 1
        return np.concatenate(parts)

    def take(self) -> np.ndarray | None:
        """Next message: None below ``chunk_ms``, else all queued up to ``max_message_ms``."""
        if self._queued < self.chunk_samples:
            return None
        out = self._pop(self.max_message_samples)
        if len(out) > self.chunk_samples:
            self.coalesced_messages += 1
        return out

    def flush(self) -> np.ndarray | None:
        """Everything still queued (end of conversation), or None if empty."""
        if not self._frames:
            return None
        return self._pop(self._queued)

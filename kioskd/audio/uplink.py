"""Bounded microphone backlog with coalescing (pure: no clocks, no I/O).

The microphone produces 10 ms frames whether or not the WebSocket can keep up. Frames
queue here. The sender normally takes ``chunk_ms`` at a time; when it fell behind (a
slow or stalled network) :meth:`UplinkBuffer.take` coalesces everything queued into one
message of up to ``max_message_ms``, so the backlog drains with fewer, larger messages.
The backlog is bounded by ``max_backlog_ms``: past it, non-speech frames are dropped
first (oldest first), then speech frames (oldest first). Nothing ever blocks.

Whether a frame is speech matters only when the bound must drop something, so a frame
pushed without a flag is classified (by the ``classify`` function given) only then, once,
oldest first: a conversation whose link keeps up never runs a VAD at all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

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
        classify: Callable[[np.ndarray], bool] | None = None,
    ) -> None:
        """Create an empty backlog; sizes in milliseconds of audio at ``rate``.

        ``classify(frame) -> is speech`` is asked about frames pushed without a flag when
        one may have to be dropped (without it such frames count as speech).
        """
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
        self._classify = classify
        self._frames: deque[np.ndarray] = deque()
        self._speech: deque[bool | None] = deque()  # per frame: speech, silence, not asked yet
        self._speech_head = 0  # this many frames at the head are known to be speech
        self._queued = 0
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

    @property
    def ready(self) -> bool:
        """Whether :meth:`take` would return a message now."""
        return self._queued >= self.chunk_samples

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

    def push(self, frame: np.ndarray, speech: bool | None = None) -> None:
        """Queue one microphone frame (a copy); drops old frames past the bound (never blocks)."""
        self._append(np.array(frame, dtype=np.int16).reshape(-1), speech)  # a copy: callers reuse buffers
        self._enforce_bound()

    def push_block(self, frames: np.ndarray, speech: bool | None = None) -> None:
        """Queue the rows of ``frames`` (shape ``(n, frame_samples)``) as frames; one copy for all."""
        block = np.array(frames, dtype=np.int16).reshape(-1, self.frame_samples)
        for f in block:
            self._append(f, speech)
        self._enforce_bound()

    def _append(self, frame: np.ndarray, speech: bool | None) -> None:
        if len(frame):
            self._frames.append(frame)
            self._speech.append(None if speech is None else bool(speech))
            self._queued += len(frame)

    def _enforce_bound(self) -> None:
        while self._queued > self.max_backlog_samples:
            self._drop_one()
        self._peak = max(self._peak, self._queued)

    def _is_speech(self, index: int) -> bool:
        flag = self._speech[index]
        if flag is None:
            flag = self._classify is None or bool(self._classify(self._frames[index]))
            self._speech[index] = flag
        return flag

    def _drop_one(self) -> None:
        """Drop the oldest non-speech frame, else the oldest frame."""
        index = self._speech_head
        while index < len(self._frames) and self._is_speech(index):
            index += 1
        self._speech_head = index
        speech = index == len(self._frames)
        if speech:
            index = 0
            self._speech_head -= 1
        frame = self._frames[index]
        del self._frames[index]
        del self._speech[index]
        self._queued -= len(frame)
        if speech:
            self._dropped_speech += len(frame)
        else:
            self._dropped_silence += len(frame)

    def _pop(self, limit: int) -> np.ndarray:
        parts: list[np.ndarray] = []
        have = 0
        while self._frames and (not parts or have + len(self._frames[0]) <= limit):
            frame = self._frames.popleft()
            self._speech.popleft()
            parts.append(frame)
            have += len(frame)
        self._speech_head = max(0, self._speech_head - len(parts))
        self._queued -= have
        self.messages += 1
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)

    def take(self) -> np.ndarray | None:
        """Next message: None below ``chunk_ms``, else all queued up to ``max_message_ms``."""
        if not self.ready:
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

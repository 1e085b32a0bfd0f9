"""The per-conversation audio streams the engine hands out: :class:`Uplink` and :class:`Playback`.

Both run on the Trio thread and know nothing of the engine: an uplink is fed blocks of
16 kHz frames and closes through a callback; a playback pushes into the shared
:class:`~kioskd.audio.speaker.Speaker` and reports pushes and its close through callbacks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import trio
import webrtcvad

from kioskd.audio.formats import FRAME_SAMPLES, INTERNAL_RATE, AudioFormat, Resampler, decode, encode
from kioskd.audio.speaker import Speaker
from kioskd.audio.uplink import UplinkBuffer
from kioskd.config import AudioConfig

__all__ = ["FRAME_MS", "PLAYBACK_FLUSH_IDLE_S", "VAD_AGGRESSIVENESS", "Playback", "Uplink"]

FRAME_MS = 10
"""Length of one internal frame."""
VAD_AGGRESSIVENESS = 2
"""webrtcvad mode for the uplink's speech flags (0 least, 3 most aggressive)."""
VOICE_WINDOW_FRAMES = 10
"""Frames (10 ms each) an uplink's ``voice_level`` averages: 100 ms, the window of the
simulator's vad_score, so the light moves the same with or without the agent's VAD."""
PLAYBACK_FLUSH_IDLE_S = 0.04
"""Agent audio idle this long: flush the resampler's held-back tail (its filter delay, 3–6 ms)."""


class Uplink:
    """Microphone audio for one conversation: pre-roll first, then live frames.

    Messages are ``chunk_ms`` long, coalesced up to ``max_message_ms`` when the consumer
    falls behind; the capture side never waits (the buffer drops the oldest audio beyond
    ``max_backlog_ms``, silence first: frames are classified by webrtcvad only when the
    bound needs it). Create with :meth:`AudioEngine.open_uplink`.
    """

    def __init__(
        self, config: AudioConfig, fmt: AudioFormat, preroll: np.ndarray, on_close: Callable[[Uplink], object]
    ) -> None:
        """Start with ``preroll`` (16 kHz samples, whole frames) already queued."""
        self.format = fmt
        self._sent = False
        self._on_close = on_close
        vad = webrtcvad.Vad(VAD_AGGRESSIVENESS)
        self._buffer = UplinkBuffer(
            frame_ms=FRAME_MS,
            chunk_ms=config.chunk_ms,
            max_message_ms=config.max_message_ms,
            max_backlog_ms=config.max_backlog_ms,
            rate=INTERNAL_RATE,
            classify=lambda frame: bool(vad.is_speech(frame.tobytes(), INTERNAL_RATE)),
        )
        self._resampler = Resampler(INTERNAL_RATE, fmt.rate)
        self._wake = trio.Event()
        self.closed = False
        #: when this uplink last carried speech (Trio time), and the speech flags of its latest frames
        self.speech_at: float | None = None
        self._voice = webrtcvad.Vad(VAD_AGGRESSIVENESS)
        self._speech: deque[bool] = deque(maxlen=VOICE_WINDOW_FRAMES)
        if len(preroll):
            self._buffer.push_block(preroll.reshape(-1, FRAME_SAMPLES))

    def set_format(self, fmt: AudioFormat) -> None:
        """Encode in ``fmt`` from now on (the conversation's format is known only once it opens).

        The uplink is opened at the trigger, so nothing said while connecting is lost;
        the audio queued so far is still 16 kHz and is encoded when received.
        """
        if fmt != self.format:
            if self._sent:
                raise RuntimeError("an uplink's format cannot change once audio was sent")
            self.format = fmt
            self._resampler = Resampler(INTERNAL_RATE, fmt.rate)

    def push_block(self, frames: np.ndarray) -> None:
        """Queue 16 kHz frames, shape ``(n, 160)`` (called by the engine on the Trio thread; never waits)."""
        if not self.closed:
            self._buffer.push_block(frames)
            self._wake.set()
            # the visitor's activity and the light's level (webrtcvad: ~0.03 % of a core per second)
            for frame in frames[-VOICE_WINDOW_FRAMES:]:
                self._speech.append(bool(self._voice.is_speech(frame.tobytes(), INTERNAL_RATE)))
            if any(list(self._speech)[-len(frames):]):
                self.speech_at = trio.current_time()

    @property
    def voice_level(self) -> float:
        """The share of speech frames in the latest :data:`VOICE_WINDOW_FRAMES` (0–1, as a vad_score)."""
        return sum(self._speech) / len(self._speech) if self._speech else 0.0

    async def receive(self) -> bytes:
        """The next message's audio, encoded in :attr:`format`; ClosedResourceError once closed.

        A scheduling point either way: it waits for audio, or, when a backlog is queued
        already, yields once first (a sender that never waits must not starve the rest).
        """
        waited = False
        while True:
            if self.closed:
                raise trio.ClosedResourceError("uplink is closed")
            if not waited and self._buffer.ready:
                await trio.lowlevel.checkpoint()
                waited = True
                continue
            samples = self._buffer.take()
            if samples is not None:
                out = self._resampler.process(samples)
                if len(out):
                    self._sent = True
                    return encode(out, self.format)
                continue  # the resampler is still filling: wait for more
            self._wake = trio.Event()
            await self._wake.wait()
            waited = True

    def stats(self) -> dict[str, Any]:
        """The uplink buffer's counters (backlog, drops, …)."""
        return dict(self._buffer.stats())

    def close(self) -> None:
        """Stop receiving frames; a waiting :meth:`receive` raises ClosedResourceError."""
        if not self.closed:
            self.closed = True
            self._wake.set()
            self._on_close(self)


class Playback:
    """Agent audio for one conversation, in ``fmt``, into the engine's :class:`Speaker`."""

    def __init__(
        self,
        speaker: Speaker,
        fmt: AudioFormat,
        *,
        on_push: Callable[[Playback], object],
        on_close: Callable[[Playback], object],
    ) -> None:
        """Create with :meth:`AudioEngine.open_playback`."""
        self.format = fmt
        self._speaker = speaker
        self._on_push = on_push
        self._on_close = on_close
        self._resampler: Resampler | None = None
        self.closed = False
        self.dropped_bytes = 0
        self._last_push: float | None = None  # trio time; None: nothing held in the resampler
        self._last_event = 0

    def push(self, event_id: int, data: bytes) -> None:
        """Queue agent audio (dropped if ``event_id`` ≤ the last interruption or no speaker)."""
        speaker = self._speaker
        if self.closed or not speaker.ok:
            self.dropped_bytes += len(data)
            return
        rate = speaker.rate
        if self._resampler is None or self._resampler.out_rate != rate:
            self._resampler = Resampler(self.format.rate, rate)
        samples = self._resampler.process(decode(data, self.format))
        self._last_event = event_id
        self._last_push = None if self._resampler.identity else trio.current_time()
        speaker.push(event_id, samples)
        self._on_push(self)

    @property
    def tail_due(self) -> float | None:
        """When (trio time) the resampler's held-back tail is to be played; None: nothing held."""
        return None if self._last_push is None else self._last_push + PLAYBACK_FLUSH_IDLE_S

    def flush_tail(self, now: float) -> None:
        """Once :attr:`tail_due` has passed (no audio since), play the resampler's tail.

        A streaming resampler keeps the end of a reply until more input arrives; without
        this the last ~50 ms of every reply would wait for the next one.
        """
        due = self.tail_due
        if due is None or now < due or self._resampler is None:
            return
        self._last_push = None
        tail = self._resampler.process(np.zeros(0, dtype=np.int16), last=True)
        if len(tail) and not self.closed:
            self._speaker.push(self._last_event, tail)

    def interrupt(self, event_id: int) -> None:
        """Barge-in: drop audio with id ≤ ``event_id``, queued, in flight or late (short fade)."""
        if self.closed:
            return
        self._resampler = None  # the old stream's tail must not leak into the next reply
        self._last_push = None
        self._speaker.interrupt(event_id)

    @property
    def speaking(self) -> bool:
        """True while agent audio is audible: queued, or still in the device."""
        return not self.closed and self._speaker.speaking

    def close(self) -> None:
        """Stop: queued audio is discarded."""
        if not self.closed:
            self.closed = True
            self._last_push = None
            self._on_close(self)

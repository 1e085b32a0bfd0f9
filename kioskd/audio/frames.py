"""10 ms microphone frames: device blocks cut into them (:class:`Framer`), handed to listeners (:func:`deliver`).

Pure apart from logging a listener that raises; the engine calls both on the Trio thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from kioskd.audio.formats import FRAME_SAMPLES, INTERNAL_RATE, Resampler
from kioskd.audio.streams import FRAME_MS

__all__ = ["FrameListener", "Framer", "deliver"]

log = logging.getLogger(__name__)

FrameListener = Callable[[np.ndarray, float], object]
"""``fn(frame, t)``: a 10 ms int16 frame at 16 kHz and its ``trio.current_time()``."""


def deliver(listeners: list[FrameListener], frames: np.ndarray, now: float) -> None:
    """Each listener gets each frame with its time (the block's last frame at ``now``, 10 ms apart)."""
    last = len(frames) - 1
    for fn in listeners:
        try:
            for i, frame in enumerate(frames):
                fn(frame, now - (last - i) * FRAME_MS / 1000)
        except Exception:
            log.exception("audio frame listener failed listener=%r", fn)


class Framer:
    """Mono int16 at any rate → whole 16 kHz 10 ms frames, shape ``(n, 160)`` (streaming).

    At 16 kHz a block of whole frames is passed through as a view (no copy); other rates
    go through one resampler call per block. The remainder waits for the next block.
    """

    def __init__(self) -> None:
        self._resampler: Resampler | None = None
        self._rate = 0
        self._rest = np.zeros(0, dtype=np.int16)

    def reset(self) -> None:
        """Start a new stream (the next block is not a continuation)."""
        self._resampler = None
        self._rate = 0
        self._rest = np.zeros(0, dtype=np.int16)

    def feed(self, mono: np.ndarray, rate: int) -> np.ndarray:
        """The whole frames now available."""
        if rate != self._rate:
            self.reset()
            self._rate = rate
            if rate != INTERNAL_RATE:
                self._resampler = Resampler(rate, INTERNAL_RATE)
        pcm = mono if self._resampler is None else self._resampler.process(mono)
        if len(self._rest):
            pcm = np.concatenate([self._rest, pcm])
        whole = len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES
        self._rest = pcm[whole:].copy() if whole < len(pcm) else self._rest[:0]
        return pcm[:whole].reshape(-1, FRAME_SAMPLES)

"""Deterministic speech-like signals (pure numpy): voiced harmonics under a syllable envelope.

webrtcvad classifies this as speech, which is all the simulator needs from it: a user
utterance for tests and the agent's reply audio.
"""

from __future__ import annotations

from typing import Final

import numpy as np

__all__ = ["silence", "synth_speech"]

DEFAULT_F0: Final = 140.0
DEFAULT_LEVEL: Final = 0.3
_HARMONICS: Final = 20
_FORMANTS: Final = ((700.0, 130.0), (1220.0, 170.0), (2600.0, 250.0))


def synth_speech(
    seconds: float,
    rate: int = 16000,
    *,
    seed: int = 0,
    f0: float = DEFAULT_F0,
    level: float = DEFAULT_LEVEL,
) -> np.ndarray:
    """``seconds`` of a speech-like int16 signal at ``rate``; the same arguments give the same samples.

    Harmonics of a wandering fundamental, shaped by three formant bumps, under an
    envelope of 120–280 ms syllables separated by 30–80 ms dips.
    """
    n = max(0, round(seconds * rate))
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    pitch = f0 * (1.0 + 0.12 * np.sin(2 * np.pi * 0.9 * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    signal = np.zeros(n)
    for k in range(1, _HARMONICS + 1):
        freq = k * f0
        if freq >= rate / 2:
            break
        weight = sum(np.exp(-0.5 * ((freq - fc) / bw) ** 2) for fc, bw in _FORMANTS) + 0.15 / k
        signal += weight * np.sin(k * phase)
    signal /= np.max(np.abs(signal)) or 1.0
    signal *= _syllable_envelope(n, rate, rng)
    return np.round(signal * level * 32767).astype(np.int16)


def _syllable_envelope(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Raised-cosine syllables with short dips between them (never fully silent for long)."""
    env = np.full(n, 0.08)
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.12, 0.28) * rate)
        seg = np.sin(np.pi * np.arange(min(length, n - pos)) / max(length, 1)) ** 0.6
        env[pos : pos + len(seg)] = np.maximum(seg, 0.08)
        pos += length + int(rng.uniform(0.03, 0.08) * rate)
    return env


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    """``seconds`` of digital silence as int16."""
    return np.zeros(max(0, round(seconds * rate)), dtype=np.int16)

"""Short local sounds the kiosk plays by itself (e.g. while it reconnects)."""

from __future__ import annotations

import numpy as np

from kioskd.audio.formats import INTERNAL_RATE

__all__ = ["CUES", "cue"]

#: Level of a cue relative to full scale: audible, never startling.
CUE_LEVEL = 0.2
#: Ramp at each end of a tone, so a cue never clicks.
RAMP_S = 0.01

#: name → (frequency Hz, seconds) tones, played one after another with 60 ms gaps.
CUES: dict[str, tuple[tuple[float, float], ...]] = {
    "reconnecting": ((660.0, 0.12), (495.0, 0.12)),
}


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    ramp = np.minimum(1.0, np.minimum(t, seconds - t) / RAMP_S)
    return np.sin(2 * np.pi * freq * t) * ramp


def cue(name: str, rate: int = INTERNAL_RATE) -> np.ndarray:
    """The int16 samples of cue ``name`` at ``rate`` (KeyError for an unknown name)."""
    gap = np.zeros(int(0.06 * rate))
    parts = []
    for freq, seconds in CUES[name]:
        parts += [_tone(freq, seconds, rate), gap]
    return np.round(np.concatenate(parts) * CUE_LEVEL * 32767).astype(np.int16)

"""Short local sounds the kiosk plays by itself: listening, end, error/offline, reconnecting.

The shipped sounds are WAV files in ``kioskd/data/cue-*.wav``, made by this module
(``python -m kioskd.audio.cues`` writes them again from :data:`TONES`). ``[cues]`` in the
config names another WAV file for any of them, or ``""`` to turn it off. All are played
through the engine's speaker path (:meth:`AudioEngine.play_cue`), so volume, mute and
the echo canceller see them like the agent's voice.
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np

from kioskd.audio.formats import INTERNAL_RATE, Resampler, to_mono
from kioskd.ops.config import CUE_NAMES, CuesConfig

__all__ = ["DATA_DIR", "TONES", "default_path", "load_cues", "read_sound", "synthesise"]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
#: Peak of a shipped cue relative to full scale (``cues.volume`` scales it further).
CUE_LEVEL = 0.6
#: Ramp at each end of a tone, so a cue never clicks.
RAMP_S = 0.01
#: Silence between the tones of one cue.
GAP_S = 0.06

#: name → (frequency Hz, seconds) tones, played one after another.
TONES: dict[str, tuple[tuple[float, float], ...]] = {
    "listening": ((660.0, 0.09), (990.0, 0.12)),  # rising: "go ahead"
    "end": ((990.0, 0.09), (660.0, 0.14)),  # falling: "done"
    "error": ((330.0, 0.18), (330.0, 0.18)),  # low, twice: "that did not work"
    "reconnecting": ((660.0, 0.12), (495.0, 0.12)),
}


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    ramp = np.minimum(1.0, np.minimum(t, seconds - t) / RAMP_S)
    return np.sin(2 * np.pi * freq * t) * ramp


def synthesise(name: str, rate: int = INTERNAL_RATE) -> np.ndarray:
    """The int16 samples of shipped cue ``name`` (KeyError for an unknown name)."""
    gap = np.zeros(int(GAP_S * rate))
    parts = []
    for freq, seconds in TONES[name]:
        parts += [_tone(freq, seconds, rate), gap]
    return np.round(np.concatenate(parts[:-1]) * CUE_LEVEL * 32767).astype(np.int16)


def default_path(name: str) -> Path:
    """Where the shipped WAV of cue ``name`` is."""
    return DATA_DIR / f"cue-{name}.wav"


def read_sound(path: str | Path) -> np.ndarray:
    """A 16-bit PCM WAV file as 16 kHz mono int16 (OSError/wave.Error when unreadable)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise wave.Error(f"{path}: {8 * w.getsampwidth()}-bit samples; 16-bit PCM is needed")
        rate, channels = w.getframerate(), w.getnchannels()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    mono = to_mono(samples, channels) if channels > 1 else samples
    return mono if rate == INTERNAL_RATE else Resampler(rate, INTERNAL_RATE).process(mono, last=True)


def load_cues(config: CuesConfig) -> dict[str, np.ndarray]:
    """Cue name → 16 kHz samples at ``config.volume``; turned-off cues are absent. Raises OSError/wave.Error."""
    out = {}
    for name in CUE_NAMES:
        value = getattr(config, name)
        if not value:
            continue
        path = default_path(name) if value == "default" else Path(value.removeprefix("wav:"))
        out[name] = np.round(read_sound(path) * config.volume).astype(np.int16)
    return out


def write_defaults(folder: Path = DATA_DIR) -> list[Path]:
    """Write every shipped cue as a 16 kHz mono WAV into ``folder``."""
    written = []
    for name in TONES:
        path = folder / f"cue-{name}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(INTERNAL_RATE)
            w.writeframes(synthesise(name).astype("<i2").tobytes())
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_defaults(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA_DIR):
        print(written_path)

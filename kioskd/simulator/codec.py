"""Audio format strings and codecs for the simulator (pure: bytes in, samples out).

The simulator keeps its own small codec, independent of ``kioskd.audio``, so it can act
as a second opinion on the kiosk's encoding: ``pcm_<rate>`` is little-endian int16 mono,
``ulaw_8000`` is G.711 µ-law.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

__all__ = ["SUPPORTED_FORMATS", "SimFormat", "ulaw_decode", "ulaw_encode"]

#: Every format string the service documents.
SUPPORTED_FORMATS: Final[tuple[str, ...]] = (
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "pcm_48000",
    "ulaw_8000",
)

_ULAW_BIAS: Final = 0x84
_ULAW_CLIP: Final = 32635


def ulaw_decode(data: bytes) -> np.ndarray:
    """G.711 µ-law bytes → int16 samples."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def ulaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples → G.711 µ-law bytes."""
    x = samples.astype(np.int32)
    sign = (x < 0).astype(np.int32) << 7
    magnitude = np.minimum(np.abs(x), _ULAW_CLIP) + _ULAW_BIAS
    exponent = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 7, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


@dataclass(frozen=True)
class SimFormat:
    """A parsed audio format string such as ``pcm_16000`` or ``ulaw_8000``."""

    codec: str
    rate: int

    @classmethod
    def parse(cls, name: str) -> SimFormat:
        """Parse a format string; ``ValueError`` names what was wrong."""
        if name not in SUPPORTED_FORMATS:
            raise ValueError(f"unknown audio format {name!r} (expected one of {', '.join(SUPPORTED_FORMATS)})")
        codec, rate = name.split("_")
        return cls(codec, int(rate))

    @property
    def name(self) -> str:
        """The format string, e.g. ``pcm_16000``."""
        return f"{self.codec}_{self.rate}"

    @property
    def bytes_per_sample(self) -> int:
        """2 for PCM, 1 for µ-law."""
        return 1 if self.codec == "ulaw" else 2

    def decode(self, data: bytes) -> np.ndarray:
        """Encoded bytes → int16 samples (a trailing odd PCM byte is ignored)."""
        if self.codec == "ulaw":
            return ulaw_decode(data)
        usable = len(data) - len(data) % 2
        return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)

    def encode(self, samples: np.ndarray) -> bytes:
        """int16 samples → encoded bytes."""
        if self.codec == "ulaw":
            return ulaw_encode(samples)
        return samples.astype("<i2").tobytes()

"""``wav:PATH`` devices: a WAV file as microphone, a WAV file as speaker.

Both are clockless (``clocked = False``): the device thread paces them in real time on
the monotonic clock. The input plays the file once from the moment it opens, then
silence forever. The output records what the speaker would play; its RIFF and data
sizes are rewritten after every write, so the file is a valid WAV while kioskd runs.
"""

from __future__ import annotations

import os
import stat
import struct
import wave
from typing import Literal

import numpy as np

from kioskd.audio.errors import DeviceError

__all__ = ["WAV_OUTPUT_RATE", "WavSink", "WavSource", "open_wav"]

WAV_OUTPUT_RATE = 16000
"""Rate of a ``wav:`` output when ``audio.output_rate`` is 0."""
_HEADER_BYTES = 44


class WavSource:
    """A 16-bit WAV file read once in real time, then silence."""

    clocked: bool | None = False

    def __init__(self, path: str) -> None:
        """Load ``path`` (16-bit PCM, any rate and channels); DeviceError if unusable."""
        try:
            with wave.open(path, "rb") as w:
                if w.getsampwidth() != 2:
                    raise DeviceError(f"wav:{path}: {8 * w.getsampwidth()}-bit samples, need 16-bit PCM")
                self.rate = w.getframerate()
                self.channels = w.getnchannels()
                raw = w.readframes(w.getnframes())
        except (OSError, EOFError, wave.Error) as exc:
            raise DeviceError(f"wav:{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
        self.name = f"wav:{path}"
        self._samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
        self._pos = 0

    def read(self, frames: int) -> np.ndarray:
        """The next ``frames`` frames, zero-padded past the end of the file."""
        n = frames * self.channels
        out = np.zeros(n, dtype=np.int16)
        chunk = self._samples[self._pos : self._pos + n]
        out[: len(chunk)] = chunk
        self._pos += len(chunk)
        return out

    def write(self, samples: np.ndarray) -> None:
        """Not a playback device."""
        raise DeviceError(f"{self.name} is an input")

    def close(self) -> None:
        """Nothing to release (the file was read at open)."""


#: A recording holds a visitor's voice: owner only (the umask may take more away).
WAV_FILE_MODE = 0o600


def _create_fresh(path: str) -> int:
    """A new file at ``path`` with WAV_FILE_MODE: an old regular file there is replaced, not
    truncated, so neither its mode nor a descriptor someone holds on it sees the new audio.
    A FIFO or device (e.g. ``/dev/null``) is opened as it is."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = 0
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        os.unlink(path)
    elif mode:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, WAV_FILE_MODE)


class WavSink:
    """Writes 16-bit WAV, keeping the header's sizes current after every write."""

    clocked: bool | None = False

    def __init__(self, path: str, rate: int, channels: int = 1) -> None:
        """Create (truncate) ``path``; DeviceError if it cannot be written."""
        self.name = f"wav:{path}"
        self.rate = rate
        self.channels = channels
        self._data_bytes = 0
        try:
            self._f = os.fdopen(_create_fresh(path), "wb")
            self._f.write(self._header())
            self._f.flush()
        except OSError as exc:
            raise DeviceError(f"wav:{path}: cannot write: {exc.strerror}") from None

    def _header(self) -> bytes:
        block = 2 * self.channels
        return struct.pack(
            "<4sI4s4sIHHIIHH4sI",
            b"RIFF", 36 + self._data_bytes, b"WAVE",
            b"fmt ", 16, 1, self.channels, self.rate, self.rate * block, block, 16,
            b"data", self._data_bytes,
        )  # fmt: skip

    def read(self, frames: int) -> np.ndarray:
        """Not a capture device."""
        raise DeviceError(f"{self.name} is an output")

    def write(self, samples: np.ndarray) -> None:
        """Append samples, then rewrite the sizes and flush (readable mid-run)."""
        data = np.asarray(samples, dtype="<i2").tobytes()
        try:
            self._f.seek(0, os.SEEK_END)
            self._f.write(data)
            self._data_bytes += len(data)
            self._f.seek(0)
            self._f.write(self._header())
            self._f.flush()
        except (OSError, ValueError) as exc:
            raise DeviceError(f"{self.name}: write failed: {exc}") from None

    def close(self) -> None:
        """Close the file (its header is already correct)."""
        if not self._f.closed:
            self._f.close()


def open_wav(path: str, direction: Literal["input", "output"], rate: int) -> WavSource | WavSink:
    """Open a ``wav:`` device; the output is mono at ``rate`` (or :data:`WAV_OUTPUT_RATE`)."""
    if not path:
        raise DeviceError("wav: device needs a path (wav:/path/to/file.wav)")
    if direction == "input":
        return WavSource(path)
    return WavSink(path, rate or WAV_OUTPUT_RATE)

"""Shared pieces of the benchmarks: statistics, clocks, signals and simulated sound devices.

Simulated devices model real ones faithfully enough to measure latency *at the device*:

* :class:`Mic` is a clocked capture device. Sample ``j`` is captured at ``t0 + j/rate``;
  ``read(n)`` blocks until the last of its ``n`` samples has been captured, as a real
  sound card does, so a device period's latency is included in every figure.
* :class:`Speaker` is a clocked playback device with a ``buffer``-sample ring buffer:
  ``write`` waits until its samples fit behind what is still to play, then queues them. It records
  what plays when (:attr:`Speaker.timeline`, indexed by ``(t - origin) * rate``), so "silent at" is
  read from the played samples.
* An echo path can feed the speaker's played samples (through an impulse response) back
  into the microphone.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RATE = 16000
REPO = Path(__file__).resolve().parents[2]
SPEECH_WAV = REPO / "kioskd" / "data" / "visitor.wav"


# --------------------------------------------------------------------------- statistics


def summary(values: list[float], *, scale: float = 1.0, unit: str = "ms") -> dict[str, Any]:
    """Median, p95 (and p99 with ≥ 100 samples), min, max and n of ``values`` × ``scale``."""
    xs = sorted(v * scale for v in values if v is not None and not math.isnan(v))
    out: dict[str, Any] = {"n": len(xs), "unit": unit}
    if not xs:
        return out
    out["median"] = statistics.median(xs)
    out["p95"] = percentile(xs, 95)
    if len(xs) >= 100:
        out["p99"] = percentile(xs, 99)
    out["min"], out["max"] = xs[0], xs[-1]
    return out


def percentile(sorted_xs: list[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation) of already sorted values."""
    if len(sorted_xs) == 1:
        return sorted_xs[0]
    pos = (len(sorted_xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def trio_minus_mono() -> float:
    """``trio.current_time() - time.monotonic()`` (Trio's clock has a random offset); call inside trio.run."""
    import trio

    best = math.inf
    for _ in range(5):
        a = time.monotonic()
        t = trio.current_time()
        b = time.monotonic()
        if b - a < best:
            best, off = b - a, t - (a + b) / 2
    return off


# --------------------------------------------------------------------------- signals


def read_wav(path: Path) -> np.ndarray:
    """int16 mono samples of a 16 kHz WAV."""
    import wave

    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()


def speech_clip(seconds: float, offset: float = 0.3) -> np.ndarray:
    """``seconds`` of the visitor recording (skipping its leading silence)."""
    s = read_wav(SPEECH_WAV)
    a = int(offset * RATE)
    return s[a : a + int(seconds * RATE)]


def script(total_s: float, pattern: list[tuple[str, float]], seed: int = 1, dither: int = 24) -> np.ndarray:
    """A microphone signal: ``pattern`` ([("speech"|"silence", seconds), …]) repeated for ``total_s``,
    plus seeded low-level noise so every stretch of samples is unique (lets us find a sample again)."""
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    n = 0
    total = int(total_s * RATE)
    while n < total:
        for kind, sec in pattern:
            part = speech_clip(sec) if kind == "speech" else np.zeros(int(sec * RATE), np.int16)
            parts.append(part)
            n += len(part)
    sig = np.concatenate(parts)[:total].astype(np.int32)
    sig += rng.integers(-dither, dither + 1, size=len(sig))
    return np.clip(sig, -32768, 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> None:
    """Write int16 mono ``samples`` as a WAV file."""
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def room_ir(
    delay_s: float = 0.030, tail_s: float = 0.060, decay_s: float = 0.012, gain: float = 0.5, seed: int = 7
) -> np.ndarray:
    """Speaker → microphone impulse response (as in tests/test_echo.py): delay, direct path, decaying tail."""
    rng = np.random.default_rng(seed)
    delay = int(delay_s * RATE)
    k = np.arange(int(tail_s * RATE))
    ir = np.zeros(delay + len(k))
    ir[delay:] = rng.standard_normal(len(k)) * np.exp(-k / (decay_s * RATE))
    ir[delay] = 1.0
    out: np.ndarray = ir * gain / np.sqrt(np.sum(ir**2))
    return out


# --------------------------------------------------------------------------- devices


@dataclass
class Speaker:
    """A clocked playback device that records what it played and when (see module docstring)."""

    origin: float  # monotonic time of timeline index 0
    seconds: float
    buffer: int  # ring buffer size (samples): write() waits until the new samples fit
    name: str = "bench-speaker"
    rate: int = RATE
    channels: int = 1
    clocked: bool | None = True
    timeline: np.ndarray = field(init=False)
    end: int = field(init=False, default=0)  # index just past the last written sample
    writes: int = field(init=False, default=0)
    late_writes: int = field(init=False, default=0)  # the device ran dry before this write (an underrun)
    pauses: int = field(init=False, default=0)  # stopped on purpose (an idle speaker): not an underrun
    _resumed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.timeline = np.zeros(int(self.seconds * self.rate) + self.rate, dtype=np.int16)
        self.lock = threading.Lock()

    def now_index(self, t: float | None = None) -> int:
        return int(((time.monotonic() if t is None else t) - self.origin) * self.rate)

    def get_write_available(self) -> int:
        """Frames writable now without blocking: the ring buffer's free space (as PortAudio reports it)."""
        with self.lock:
            queued = max(0, self.end - self.now_index())
        return max(0, self.buffer - queued)

    def write(self, samples: np.ndarray) -> None:
        """Blocking write into a ring buffer of ``buffer`` samples: waits for room, then queues."""
        s = np.asarray(samples, dtype=np.int16).reshape(-1)
        with self.lock:
            end = self.end
        wait = (end + len(s) - self.buffer) / self.rate + self.origin - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        now = self.now_index()
        with self.lock:
            if self.end < now:
                if self.writes and not self._resumed:
                    self.late_writes += 1
                self.end = now
            self._resumed = False
            a = self.end
            b = min(a + len(s), len(self.timeline))
            if a < len(self.timeline):
                self.timeline[a:b] = s[: b - a]
            self.end = a + len(s)
            self.writes += 1

    def pause(self) -> None:
        """Stop once what was written has played (PortAudio's stop_stream)."""
        with self.lock:
            self.pauses += 1

    def resume(self) -> None:
        """Start again (PortAudio's start_stream): the next write begins at once, not late."""
        with self.lock:
            self._resumed = True

    def read(self, frames: int) -> np.ndarray:
        raise OSError("bench speaker is an output")

    def close(self) -> None:
        pass

    def played(self, a: int, b: int) -> np.ndarray:
        """Samples that played at timeline indices [a, b) (zeros where nothing was written yet)."""
        a, b = max(0, a), max(0, b)
        out = np.zeros(b - a, dtype=np.int16)
        with self.lock:
            end = min(b, self.end, len(self.timeline))
            if end > a:
                out[: end - a] = self.timeline[a:end]
        return out


@dataclass
class Mic:
    """A clocked capture device playing ``signal`` (then silence), optionally plus speaker echo."""

    origin: float  # monotonic time at which signal[0] is captured
    signal: np.ndarray
    echo_from: Speaker | None = None
    echo_ir: np.ndarray | None = None
    name: str = "bench-mic"
    rate: int = RATE
    channels: int = 1
    clocked: bool | None = True
    pos: int = 0

    def capture_time(self, j: float) -> float:
        """Monotonic time at which sample ``j`` was captured."""
        return self.origin + j / self.rate

    def read(self, frames: int) -> np.ndarray:
        a, b = self.pos, self.pos + frames
        wait = self.capture_time(b) - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        out = np.zeros(frames, dtype=np.int32)
        part = self.signal[a:b]
        out[: len(part)] = part
        if self.echo_from is not None and self.echo_ir is not None:
            spk = self.echo_from
            # speaker timeline index of mic sample j: same monotonic instant
            sa = round((self.capture_time(a) - spk.origin) * spk.rate)
            k = len(self.echo_ir)
            first = sa - k + 1
            played = spk.played(first, sa + frames).astype(np.float64)
            if first < 0:  # before the speaker's origin: nothing played
                played = np.concatenate([np.zeros(min(-first, k - 1 + frames)), played])
            out += np.round(np.convolve(played, self.echo_ir, mode="valid")).astype(np.int32)
        self.pos = b
        return np.clip(out, -32768, 32767).astype(np.int16)

    def write(self, samples: np.ndarray) -> None:
        raise OSError("bench mic is an input")

    def close(self) -> None:
        pass


class Devices:
    """An ``opener`` for :class:`kioskd.audio.engine.AudioEngine` returning one Mic and one Speaker."""

    def __init__(self, mic: Mic, speaker: Speaker) -> None:
        self.mic = mic
        self.speaker = speaker

    def __call__(self, name: str, direction: str, rate: int, period_ms: int) -> Any:
        return self.mic if direction == "input" else self.speaker


# --------------------------------------------------------------------------- matching


class SampleLocator:
    """Finds where received uplink audio sits in the microphone signal (exact match, unique by dither)."""

    def __init__(self, signal: np.ndarray) -> None:
        self.signal = signal
        self.next = 0  # where the previous chunk ended

    def locate(self, chunk: np.ndarray) -> int | None:
        """Index of ``chunk`` in the signal, or None."""
        n = len(chunk)
        s = self.signal
        if n == 0:
            return None
        if np.array_equal(s[self.next : self.next + n], chunk):
            self.next += n
            return self.next - n
        probe = chunk[: min(n, 32)]
        for start in np.flatnonzero(s == probe[0]):
            if np.array_equal(s[start : start + len(probe)], probe) and np.array_equal(s[start : start + n], chunk):
                self.next = int(start) + n
                return int(start)
        return None

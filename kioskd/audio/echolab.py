"""Echo-canceller measurements: espeak-ng voices, simulated rooms, double-talk attenuation.

Shared by ``tests/test_echo.py`` and ``scripts/bench`` (figure 8) so both measure the same
way. A :class:`Scene` is 16 kHz audio: the agent (the speaker signal, *far*), the echo it
makes in a simulated room, the visitor (*near* talker) and the microphone mix. The agent
talks from :data:`AGENT_FROM_S`; the visitor talks over it from ``visitor_from`` s.

Measures (all in dB, per 10 ms frame, as ITU-T P.340 sorts hands-free terminals):

* :func:`doubletalk_attenuation` — how much quieter the visitor reaches the far side while
  the agent talks. The ideal output is the visitor alone; per 10 ms frame where the
  visitor speaks, the output is split by least squares into ``g·visitor + rest`` (after
  removing the canceller's constant processing delay), and the attenuation is
  ``-20·log10(g)``. The level of ``output − ideal`` against the visitor (the distortion:
  residual echo, suppression artefacts) is reported beside it.
* :func:`erle` — echo return loss enhancement on echo-only stretches (single talk).
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import wave
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kioskd.audio.formats import Resampler

__all__ = [
    "AGENT_FROM_S",
    "Canceller",
    "DoubleTalk",
    "Scene",
    "doubletalk_attenuation",
    "erle",
    "make_scene",
    "room_ir",
    "run_canceller",
    "speak",
]

RATE = 16000
FRAME = 160
AGENT_FROM_S = 1.0
"""The agent starts talking this far into every scene."""
AGENT_VOICE = ("en-us", 45)
"""espeak-ng voice and pitch of the agent."""
VISITOR_VOICE = ("en+f3", 75)
"""espeak-ng voice and pitch of the visitor (a different speaker)."""
AGENT_TEXT = (
    "Hello and welcome to the museum. The next guided tour starts at three o'clock in the "
    "main hall, and the cafe on the first floor is open until six. Please ask me anything "
    "about the exhibits, the opening hours or how to find your way around the building."
)
VISITOR_TEXT = "No, sorry, I meant the other one. Where is the cafe, and when does it close today?"
OUTPUT_LEAD_FRAMES = 4
"""Far frames reach the canceller this many frames before they play (the device buffer)…"""
OUTPUT_BURST_FRAMES = 4
"""…in bursts of this many frames (a device writer's period)."""
SPEECH_FLOOR_DB = 35.0
"""A visitor frame counts as speech when within this many dB of the visitor's loudest frame."""
VISITOR_DBFS = -27.0
"""The visitor's speech level at the microphone: about the agent's echo through :func:`room_ir`."""
NOISE_DBFS = -70.0
"""The microphone's noise floor."""
MAX_PROCESSING_DELAY = 320
"""Samples searched for the canceller's own processing delay."""


class Canceller(Protocol):
    """What the lab drives: the engine-facing API of :class:`kioskd.audio.echo.EchoCanceller`."""

    def far(self, frame: np.ndarray) -> None: ...
    def near(self, frame: np.ndarray) -> np.ndarray: ...


@functools.lru_cache(maxsize=8)
def speak(text: str, voice: str, pitch: int) -> np.ndarray:
    """espeak-ng speech at 16 kHz int16 (cached; raises RuntimeError without espeak-ng)."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = subprocess.run(
        ["espeak-ng", "--stdout", "-v", voice, "-p", str(pitch), "-s", "165", text],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    r = Resampler(rate, RATE)
    out = np.concatenate([r.process(samples), r.process(np.zeros(0, np.int16), last=True)])
    out.setflags(write=False)
    return out


def room_ir(delay_s: float = 0.030, tail_s: float = 0.060, decay_s: float = 0.012, gain: float = 0.5,
            seed: int = 7) -> np.ndarray:
    """Speaker → microphone impulse response: a delay, the direct path, a decaying random tail.

    ``gain`` is the RMS gain of the whole path (0.5: −6 dB).
    """
    rng = np.random.default_rng(seed)
    delay = int(delay_s * RATE)
    k = np.arange(int(tail_s * RATE))
    ir = np.zeros(delay + len(k))
    ir[delay:] = rng.standard_normal(len(k)) * np.exp(-k / (decay_s * RATE))
    ir[delay] = 1.0
    out: np.ndarray = ir * gain / np.sqrt(np.sum(ir**2))
    return out


def _fftconvolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]


def _drift(x: np.ndarray, ppm: float) -> np.ndarray:
    """``x`` as captured by a clock ``ppm`` parts per million fast (linear interpolation)."""
    if not ppm:
        return x
    t = np.arange(len(x)) * (1.0 + ppm * 1e-6)
    drifted: np.ndarray = np.interp(t, np.arange(len(x)), x, right=0.0)
    return drifted


@dataclass(frozen=True)
class Scene:
    """One measurement: the speaker signal, its echo, the visitor and the microphone mix."""

    far: np.ndarray  # int16: what the speaker plays (and the canceller's far input)
    echo: np.ndarray  # float: the speaker's sound at the microphone
    visitor: np.ndarray  # float: the visitor's voice at the microphone (the ideal output)
    mic: np.ndarray  # int16: echo + visitor (+ noise)
    visitor_from: float
    visitor_to: float

    @property
    def seconds(self) -> float:
        """Length of the scene."""
        return len(self.mic) / RATE


def make_scene(
    *,
    visitor_from: float = 3.0,
    seconds: float = 8.0,
    ir: np.ndarray | None = None,
    echo: bool = True,
    drift_ppm: float = 0.0,
    visitor_db: float = VISITOR_DBFS,
    noise_db: float = NOISE_DBFS,
    seed: int = 1,
) -> Scene:
    """Agent from :data:`AGENT_FROM_S` to the end, visitor from ``visitor_from`` (until their text ends).

    ``echo=False`` is the no-echo-path case (headset, far speaker); ``ir`` defaults to
    :func:`room_ir`; ``drift_ppm`` makes the microphone's clock run that much fast against
    the speaker's; ``visitor_db`` is the visitor's speech level and ``noise_db`` the
    microphone's noise floor (dBFS).
    """
    n = int(seconds * RATE)
    agent = speak(AGENT_TEXT, *AGENT_VOICE).astype(np.float64)
    visitor_speech = speak(VISITOR_TEXT, *VISITOR_VOICE).astype(np.float64)
    visitor_speech *= 10 ** ((visitor_db - _speech_level(visitor_speech)) / 20)
    far = np.zeros(n)
    a = int(AGENT_FROM_S * RATE)
    far[a:] = agent[: n - a]
    visitor = np.zeros(n)
    v = int(visitor_from * RATE)
    part = visitor_speech[: n - v]
    visitor[v : v + len(part)] = part
    path = _drift(_fftconvolve(far, room_ir() if ir is None else ir), drift_ppm) if echo else np.zeros(n)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(n) * 32768 * 10 ** (noise_db / 20)
    mic = np.clip(np.round(path + visitor + noise), -32768, 32767).astype(np.int16)
    return Scene(far.astype(np.int16), path, visitor, mic, visitor_from, min(seconds, (v + len(part)) / RATE))


def run_canceller(canceller: Canceller, scene: Scene) -> np.ndarray:
    """Feed far frames ahead in bursts (like a device writer) and each microphone frame in turn."""
    frames = len(scene.mic) // FRAME
    pushed = 0
    out = []
    for j in range(frames):
        while pushed < min(frames, j + OUTPUT_LEAD_FRAMES):
            for k in range(pushed, min(frames, pushed + OUTPUT_BURST_FRAMES)):
                canceller.far(scene.far[k * FRAME : (k + 1) * FRAME])
            pushed = min(frames, pushed + OUTPUT_BURST_FRAMES)
        out.append(np.asarray(canceller.near(scene.mic[j * FRAME : (j + 1) * FRAME]), dtype=np.int16))
    return np.concatenate(out)


def _speech_level(x: np.ndarray) -> float:
    """RMS level (dBFS) of the frames of ``x`` within :data:`SPEECH_FLOOR_DB` of its loudest."""
    e = np.mean(np.square(x[: len(x) // FRAME * FRAME].reshape(-1, FRAME)), axis=1)
    return float(10 * np.log10(np.mean(e[e > e.max() * 10 ** (-SPEECH_FLOOR_DB / 10)]) / 32768**2))


def _level(x: np.ndarray) -> float:
    return float(10 * np.log10(max(float(np.mean(np.square(x, dtype=np.float64))), 1e-12)))


def erle(scene: Scene, out: np.ndarray, a: float, b: float) -> float:
    """Echo return loss enhancement (dB) over ``[a, b)`` s, which must be echo only."""
    s = slice(int(a * RATE), int(b * RATE))
    return _level(scene.echo[s]) - _level(out[s].astype(np.float64))


def processing_delay(scene: Scene, out: np.ndarray) -> int:
    """The canceller's constant delay (samples), found where the visitor speaks."""
    s = slice(int(scene.visitor_from * RATE), int(scene.visitor_to * RATE) - MAX_PROCESSING_DELAY)
    v = scene.visitor[s]
    o = out.astype(np.float64)
    return max(range(MAX_PROCESSING_DELAY), key=lambda k: float(np.dot(o[s.start + k : s.stop + k], v)))


@dataclass(frozen=True)
class DoubleTalk:
    """Attenuation of the visitor during double talk (see the module docstring)."""

    attenuation_db: float  # the visitor's speech energy in vs out (over all speech frames)
    median_db: float  # median per-frame attenuation
    p90_db: float  # 90th percentile per-frame attenuation (the crushed frames)
    within_6db: float  # fraction of speech frames attenuated by at most 6 dB
    distortion_db: float  # level of (output − visitor) against the visitor, over the same frames
    frames: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def doubletalk_attenuation(scene: Scene, out: np.ndarray, a: float | None = None, b: float | None = None,
                           *, delay: int | None = None) -> DoubleTalk:
    """Per 10 ms visitor-speech frame in ``[a, b)`` s (default: the whole visitor turn)."""
    lag = processing_delay(scene, out) if delay is None else delay
    o = np.concatenate([out.astype(np.float64)[lag:], np.zeros(lag)])
    lo = int(((scene.visitor_from if a is None else a) * RATE) // FRAME)
    hi = int(((scene.visitor_to if b is None else b) * RATE) // FRAME)
    v = scene.visitor[lo * FRAME : hi * FRAME].reshape(-1, FRAME)
    y = o[lo * FRAME : hi * FRAME].reshape(-1, FRAME)
    ev = np.sum(v * v, axis=1)
    speech = ev > ev.max() * 10 ** (-SPEECH_FLOOR_DB / 10)
    v, y, ev = v[speech], y[speech], ev[speech]
    g = np.maximum(np.sum(v * y, axis=1) / ev, 1e-3)
    att = -20 * np.log10(g)
    total = -10 * np.log10(max(float(np.sum(g * g * ev) / np.sum(ev)), 1e-6))
    dist = 10 * np.log10(max(float(np.sum((y - v) ** 2) / np.sum(ev)), 1e-12))
    return DoubleTalk(float(total), float(np.median(att)), float(np.percentile(att, 90)),
                      float(np.mean(att <= 6.0)), float(dist), len(att))


def sweep(factory: Callable[[], Canceller], scenes: Iterable[tuple[str, Scene]]) -> dict[str, DoubleTalk]:
    """Double-talk attenuation of a fresh canceller from ``factory`` on each named scene."""
    return {name: doubletalk_attenuation(sc, run_canceller(factory(), sc)) for name, sc in scenes}

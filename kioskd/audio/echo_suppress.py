"""The echo canceller's residual echo suppressor (stage 3 of :mod:`kioskd.audio.echo`) and the
spectral helpers both use.

Per frequency bin, the echo left after the linear filter is ``leak × |echo estimate|²`` (or
``leak × far power`` while the delay is not known); the leaks are learnt from far-only frames
(they fall at once, and rise slowly only while the error looks like echo, never on visitor
speech). The gain is ``1 − over × residual / error`` (floor :data:`SUPPRESS_FLOOR_DB`): where
the visitor dominates a bin it stays near 1, where only echo is left it goes to the floor.
Frames in which the double-talk detector hears no visitor get :data:`SINGLE_TALK_FLOOR_DB`.

Everything works in place on preallocated arrays: numpy's cost per call, not per sample, is
what a 10 ms frame of 161 bins pays for.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

SPECTRUM_SMOOTHING = 0.85
"""Smoothing of the suppressor's power spectra per frame."""
LEAK_MAX = 1.0
"""Largest residual-echo / echo-estimate ratio the suppressor assumes."""
LEAK_FALL = 0.3
"""Per-frame rate at which a residual-echo ratio falls towards a lower observation."""
LEAK_FALL_UNPLACED = 0.1
"""The same for the first ``MAX_DELAY_MS`` of far speech while the delay is not known:
an echo may still be on its way, so silence at the microphone proves little yet."""
LEAK_RISE = 0.05
"""Per-frame rate at which it rises towards a higher one that still looks like echo."""
ECHO_PRESENT = 1e5
"""Power of a bin (this frame, ≈ −70 dBFS) above which an echo source is there to learn from;
the smoothed spectra lag behind, so a far signal that just stopped teaches nothing. While the
delay is unknown, only frames in which the agent is talking teach."""
LEAK_ECHO_LIKE = 4.0
"""The error looks like echo (not the visitor) while it is below this × the expected residual."""
OVER_SUPPRESSION = 2.0
"""Residual estimate safety factor."""
SUPPRESS_FLOOR_DB = -40.0
"""Deepest suppression per bin."""
SINGLE_TALK_FLOOR_DB = -60.0
"""Suppression of frames in which the visitor is not talking (echo only)."""
NEAR_SER = 8.0
"""A bin is the visitor's when its error is this many times the expected residual (9 dB)."""
NEAR_SHARE = 0.5
"""The visitor talks in a frame when this share of its error energy is in such bins."""
NEAR_HANGOVER_FRAMES = 8
"""Frames the visitor counts as talking after the detector last saw them (80 ms)."""
TAIL_WEIGHTS = np.array([0.25, 0.5, 1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.12, 0.09], dtype=np.float32)
"""How much each filter partition's far power feeds the far-based residual estimate (the
echo's shape: the direct path two partitions in, then a decaying tail)."""

_pocketfft: Any
try:  # numpy ≥ 2: pocketfft's ufuncs themselves; np.fft's checks cost more than a 320-point transform
    _pocketfft = importlib.import_module("numpy.fft._pocketfft_umath")
except ImportError:  # pragma: no cover - numpy 1.x
    _pocketfft = None
_ONE = np.float32(1.0)  # a float32 factor: the transform runs in float32 (np.fft's int 1 makes it float64)


def rfft_into(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``np.fft.rfft`` of the rows of ``a`` (even length) into ``out``."""
    if _pocketfft is None:  # pragma: no cover - numpy 1.x
        out[...] = np.fft.rfft(a)
        return out
    result: np.ndarray = _pocketfft.rfft_n_even(a, _ONE, out=out)
    return result


def irfft_into(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``np.fft.irfft`` of the rows of ``a`` into ``out`` (its rows' length)."""
    n = out.shape[-1]
    if _pocketfft is None:  # pragma: no cover - numpy 1.x
        out[...] = np.fft.irfft(a, n)
        return out
    result: np.ndarray = _pocketfft.irfft(a, np.float32(1.0 / n), out=out)
    return result


def power_into(spec: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``|spec|²`` into ``out``."""
    np.abs(spec, out=out)
    result: np.ndarray = np.square(out, out=out)
    return result


def sqrt_hann(n: int) -> np.ndarray:
    """The periodic sqrt-Hann window (50 % overlap-add of its square is 1)."""
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


class Suppressor:
    """Residual echo suppression and double-talk detection, one frame at a time."""

    def __init__(self, bins: int, partitions: int) -> None:
        """For spectra of ``bins`` bins and a linear filter of ``partitions`` partitions."""
        k = bins
        self.hang = 0
        """Frames the visitor still counts as talking (0: echo only)."""
        self._tail = np.stack([TAIL_WEIGHTS[:partitions]] * 2)  # twice: the far power goes in two rows
        # this frame's powers (microphone, windowed error ×2, far ×2, echo estimate) and their
        # smoothed spectra, in the order the learnt ratios (ERL, residual / far, residual / echo
        # estimate) take them: numerators, then denominators
        self._now = np.zeros((6, k), dtype=np.float32)
        self._spectra = np.zeros((6, k), dtype=np.float32)
        self._ds = np.zeros((6, k), dtype=np.float32)
        self._leaks = np.full((3, k), LEAK_MAX, dtype=np.float32)  # ERL, residual / far, residual / estimate
        self._ratio = np.zeros((3, k), dtype=np.float32)
        self._rate = np.zeros((3, k), dtype=np.float32)
        self._present = np.zeros((3, k), dtype=bool)
        self._up = np.zeros((3, k), dtype=bool)
        self._down = np.zeros((3, k), dtype=bool)
        self._res = np.zeros((2, k), dtype=np.float32)
        self._mine = np.ones((2, k), dtype=np.float32)  # [the visitor's bins (0/1), ones]
        self._big = np.zeros(k, dtype=bool)
        self._gain = np.zeros(k, dtype=np.float32)
        self._fall_known = np.full((3, 1), LEAK_FALL, dtype=np.float32)
        # while the delay is unknown only the residual / far ratio falls slowly: the
        # double-talk detector needs both it and the ERL to call a frame the visitor's
        self._fall_unknown = np.array([[LEAK_FALL], [LEAK_FALL_UNPLACED], [LEAK_FALL]], dtype=np.float32)
        self._floor = np.float32(10 ** (SUPPRESS_FLOOR_DB / 20))
        self._silent = np.full(k, 10 ** (SINGLE_TALK_FLOOR_DB / 20), dtype=np.float32)

    def frame(self, es: np.ndarray, ep: np.ndarray, d2: np.ndarray, d2_ser: np.ndarray, far: np.ndarray,
              placed: bool, far_now: bool, known: bool, out: np.ndarray) -> None:
        """One frame: ``out`` ← gain × the windowed error spectrum.

        ``es``: spectra of the gradient block, the windowed error and the windowed echo
        estimate, ``ep`` their powers; ``d2``: the microphone's power spectrum (``d2_ser``: ÷
        :data:`NEAR_SER`); ``far``: far power spectra over the filter's window once the delay
        estimator has ``placed`` it, else over every lag (any far frame may be what the
        microphone hears); ``far_now``: the newest far frame is loud; ``known``: the delay is
        known or the far side has talked longer than the longest delay.
        """
        now = self._now
        if placed:  # the echo's source
            np.dot(self._tail, far, now[3:5])
        else:
            np.maximum.reduce(far, axis=0, out=now[3])
            now[4] = now[3]
        now[0] = d2
        now[1:3] = ep[1]
        now[5] = ep[2]
        ew2, xw2 = now[1], now[3]
        spectra, ds = self._spectra, self._ds
        np.subtract(now, spectra, out=ds)
        ds *= 1 - SPECTRUM_SMOOTHING
        spectra += ds
        if placed or far_now:  # else no echo source is there to learn from
            self._learn(self._fall_known if known else self._fall_unknown)
        # the echo estimate is trusted only once the delay estimator has found an echo
        res, leaks = self._res, self._leaks
        if placed:
            np.multiply(leaks[1:], now[4:], out=res)
            np.maximum(res[0], res[1], out=res[0])
        else:
            np.multiply(leaks[1], xw2, out=res[0])
        # u: the error over the expected residual before the safety factor (ser = u / OVER_SUPPRESSION)
        u = res[0]
        u += 1e-3 / OVER_SUPPRESSION
        np.divide(ew2, u, out=u)
        # double-talk detector: most of the error's energy is in bins where the error is far
        # above the expected residual and the microphone far above the expected echo (the
        # latter does not depend on the linear filter, which may slip for a moment)
        mine = self._mine
        np.multiply(leaks[0], xw2, out=res[1])
        np.greater(d2_ser, res[1], out=mine[0])
        np.greater(u, NEAR_SER * OVER_SUPPRESSION, out=self._big)
        mine[0] *= self._big
        theirs, total = (mine @ ew2).tolist()
        self.hang = NEAR_HANGOVER_FRAMES if theirs > NEAR_SHARE * total + 1e-3 else max(0, self.hang - 1)
        if self.hang:  # (ser − 1) / (ser + 1e-9), at least the floor (it is below 1 anyway)
            gain = self._gain
            np.subtract(u, OVER_SUPPRESSION, out=gain)
            u += OVER_SUPPRESSION * 1e-9
            gain /= u
            np.maximum(gain, self._floor, out=gain)
        else:
            gain = self._silent
        np.multiply(gain, es[1], out=out)

    def _learn(self, fall: np.ndarray) -> None:
        """One frame of learning the residual-echo ratios, per bin, where an echo source is present.

        Each falls towards this frame's ratio at ``fall`` (per ratio); rises slowly, and only
        while the error looks like echo (the ratio within :data:`LEAK_ECHO_LIKE` × the leak),
        so the visitor's speech never teaches the suppressor that it is echo.
        """
        leak, ratio, rate, up, down, present = self._leaks, self._ratio, self._rate, self._up, self._down, self._present
        spectra = self._spectra
        np.add(spectra[3:], 1e-3, out=rate)
        np.divide(spectra[:3], rate, out=ratio)
        np.greater(self._now[3:], ECHO_PRESENT, out=present)
        np.multiply(leak, LEAK_ECHO_LIKE, out=rate)
        np.less(ratio, rate, out=up)
        up &= present
        np.less(ratio, leak, out=down)
        down &= present
        np.multiply(up, np.float32(LEAK_RISE), out=rate)
        np.copyto(rate, fall, where=down)
        ratio -= leak
        ratio *= rate
        leak += ratio
        np.minimum(leak, LEAK_MAX, out=leak)

"""Acoustic echo cancellation on 10 ms frames that keeps the visitor during double talk.

The speaker signal (what is being played, resampled to the internal rate) goes in with
:meth:`EchoCanceller.far`, one 10 ms frame at a time, in the order the frames are handed to
the output device (silence included). Each microphone frame goes through
:meth:`EchoCanceller.near`, which pairs it with the oldest queued far frame (zeros if none
is queued) and returns the echo-reduced frame. Far frames are queued when written to the
device and consumed when the microphone delivers, so the far signal *leads* the echo by
the output latency plus the acoustic path; the delay estimator finds it. The far queue is
bounded (:data:`MAX_FAR_BACKLOG_FRAMES`) so clock drift cannot grow it without limit.

Three stages, numpy only (no native library to build or install):

1. **Delay estimator** — binary spectra (which bands are above their running mean) of the
   far and near frames, compared at every lag up to :data:`MAX_DELAY_MS`; the lag with
   the smallest smoothed mismatch is where the echo comes from (as WebRTC's delay
   estimator does). It moves the linear filter's window; the filter's taps move with it.
2. **Linear canceller** — a partitioned-block frequency-domain Kalman filter
   (:data:`PARTITIONS` × 10 ms from the estimated delay; Enzner & Vary 2006, Kuech et al.
   2014). Its step size is the Kalman gain, whose observation noise is the smoothed
   error power: when the visitor talks the error grows and adaptation slows by itself, so
   double talk neither makes it diverge nor needs a hard freeze.
3. **Residual echo suppressor** — per frequency bin, the echo left after the filter is
   ``leak × |echo estimate|²``; the leak is learnt from far-only frames (it falls at once,
   and rises slowly only while the error looks like echo, never on visitor speech). The
   gain is ``1 − over × residual / error`` (floor :data:`SUPPRESS_FLOOR_DB`): where the
   visitor dominates a bin it stays near 1, where only echo is left it goes to the floor.
   With no echo path the echo estimate is ~0 and nothing is suppressed.

The suppressor works on 50 %-overlapped sqrt-Hann windows, so output lags input by one
frame (10 ms; AEC3's was 8 ms).
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["AVAILABLE", "MAX_FAR_BACKLOG_FRAMES", "EchoCanceller"]

DEFAULT_RATE = 16000
"""Rate the canceller runs at (the internal microphone rate)."""
FRAME_MS = 10
"""Frame (and filter partition) duration."""
MAX_FAR_BACKLOG_FRAMES = 50
"""Bound on queued far frames (500 ms); past it the oldest are dropped."""
FAR_TRIM_FRAMES = 100
"""Every this many microphone frames (1 s) the far queue's lowest depth is checked…"""
FAR_QUEUE_MAX = 8
"""…and if it never went below this many frames (80 ms), it is trimmed…"""
FAR_QUEUE_SLACK = 2
"""…to this many (a margin for thread hand-off jitter and bursty device writes)."""
MAX_DELAY_MS = 400
"""Largest far → echo delay found (output latency + acoustic path)."""
PARTITIONS = 6
"""Linear filter length in 10 ms partitions, from the estimated delay (the echo tail it models;
the suppressor takes what is left)."""
PRE_PARTITIONS = 2
"""Partitions the filter starts before the estimated delay (the estimate is ±1 frame)."""
CONSTRAIN_EVERY = 2
"""Frames between two gradient constraints (one partition each; round robin)."""
KALMAN_A = 0.9995
"""State transition of the Kalman filter: how fast the echo path may change."""
KALMAN_P0 = 0.1
"""Initial state uncertainty of each filter coefficient."""
PSI_SMOOTHING = 0.5
"""Smoothing of the error power (the Kalman observation noise) per frame."""
PSI_WEIGHT = 4.0
"""Weight of the observation noise against the far power in the Kalman gain (÷ partitions)."""
DELAY_BANDS = (4, 124, 5)
"""FFT bins (first, stop, step) grouped into the delay estimator's bands (200 Hz – 6.2 kHz)."""
ACTIVE_PEAK = 64
"""A frame whose peak is above this (≈ −54 dBFS) has signal in it (for the delay estimator)."""
BAND_MEAN_RATE = 0.05
"""Per-frame rate of the running band means the binary spectra compare against."""
DELAY_WARMUP_FRAMES = 10
"""Active frames each side needs before its binary spectra count (the means settle)."""
DELAY_SMOOTHING = 0.97
"""Per-frame smoothing of each lag's mismatch (≈ 0.5 s)."""
DELAY_CONFIDENT = 0.38
"""A lag is taken only if its mismatch is below this (0.5 is chance)."""
DELAY_HOLD_FRAMES = 10
"""A new lag must stay the best this many frames before the filter moves."""
SPECTRUM_SMOOTHING = 0.85
"""Smoothing of the suppressor's power spectra per frame."""
LEAK_MAX = 1.0
"""Largest residual-echo / echo-estimate ratio the suppressor assumes."""
LEAK_FALL = 0.3
"""Per-frame rate at which a residual-echo ratio falls towards a lower observation."""
LEAK_FALL_UNPLACED = 0.1
"""The same for the first :data:`MAX_DELAY_MS` of far speech while the delay is not known:
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
NEAR_ADAPT = 0.1
"""Kalman gain factor while the visitor talks."""
TAIL_WEIGHTS = np.array([0.25, 0.5, 1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.12, 0.09][:PARTITIONS], dtype=np.float32)
"""How much each partition's far power feeds the far-based residual estimate (the echo's
shape: the direct path at :data:`PRE_PARTITIONS`, then a decaying tail)."""

AVAILABLE = True
"""The canceller is pure numpy: always available (kept for callers that ask)."""


def _learn(leak: np.ndarray, ratio: np.ndarray, present: np.ndarray, fall: np.ndarray) -> np.ndarray:
    """One frame of learning a residual-echo ratio, per bin, where an echo source is ``present``.

    Falls towards ``ratio`` at ``fall``; rises slowly, and only while the error looks like echo
    (``ratio`` within :data:`LEAK_ECHO_LIKE` × the leak), so the visitor's speech never
    teaches the suppressor that it is echo.
    """
    down = present & (ratio < leak)
    up = present & ~down & (ratio < LEAK_ECHO_LIKE * leak)
    rate = down * fall + up * np.float32(LEAK_RISE)
    learnt: np.ndarray = np.minimum(leak + rate * (ratio - leak), LEAK_MAX)
    return learnt


def _sqrt_hann(n: int) -> np.ndarray:
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n))


class EchoCanceller:
    """Removes the speaker's echo from microphone frames (see the module docstring)."""

    def __init__(self, rate: int = DEFAULT_RATE, *, enabled: bool = True) -> None:
        """Create a canceller at ``rate`` Hz; ``enabled=False`` passes audio through."""
        if rate <= 0 or rate % 100:
            raise ValueError(f"rate must be a positive multiple of 100 Hz, got {rate}")
        self.rate = rate
        self.frame_samples = m = rate * FRAME_MS // 1000
        self.enabled = enabled
        self._far: deque[np.ndarray] = deque()
        self._silence = np.zeros(m, dtype=np.int16)
        self.far_dropped = 0
        self.far_missing = 0
        self.far_trimmed = 0
        self.frames = 0
        self._k = m + 1  # FFT bins of a 2-frame block
        self._lags = MAX_DELAY_MS // FRAME_MS + 1
        self._window = _sqrt_hann(2 * m).astype(np.float32)
        first, stop, step = (int(b * m / 160) for b in DELAY_BANDS)
        self._band_edges = np.arange(first, stop + 1, max(1, step))
        self._reset_state()

    def _reset_state(self) -> None:
        m, k, n = self.frame_samples, self._k, PARTITIONS
        cap = self._lags + n
        # far history, newest first: spectra of [x(t-1), x(t)] and their powers; written twice
        # (at i and i + cap) so ``[i : i + cap]`` is always a contiguous view
        self._cap = cap
        self._xs = np.zeros((2 * cap, k), dtype=np.complex64)
        self._x2 = np.zeros((2 * cap, k), dtype=np.float32)
        self._bits = np.zeros((2 * cap, len(self._band_edges) - 1), dtype=bool)
        self._active = np.zeros(2 * cap, dtype=bool)
        self._i = cap
        self._min_depth = 0
        self._depth_frames = 0
        self._io = np.zeros((2, 2 * m), dtype=np.float32)  # the last two far and microphone frames
        # delay estimator
        self._far_mean = np.zeros(len(self._band_edges) - 1)
        self._near_mean = np.zeros(len(self._band_edges) - 1)
        self._mismatch = np.full(self._lags, 0.5)
        self._far_seen = 0
        self._far_now = False  # the newest far frame has signal in it
        self._near_seen = 0
        self._lag = 0  # the filter's first partition, in frames
        self._placed = False  # the delay estimator has placed the filter
        self._candidate = -1
        self._held = 0
        # Kalman filter
        self._h = np.zeros((n, k), dtype=np.complex64)
        self._p = np.full((n, k), KALMAN_P0, dtype=np.float32)
        self._psi = np.zeros(k, dtype=np.float32)
        self._constrain = 0
        # suppressor
        self._ey = np.zeros((2, 2 * m), dtype=np.float32)  # the last two error and echo-estimate frames
        self._ola: np.ndarray = np.zeros(m, dtype=np.float32)
        self._eb = np.zeros(2 * m, dtype=np.float32)  # [zeros, error]: the gradient block
        self._spectra = np.zeros((4, k), dtype=np.float32)
        self._leaks = np.full((3, k), LEAK_MAX, dtype=np.float32)
        self._fall_known = np.full((3, 1), LEAK_FALL, dtype=np.float32)
        # while the delay is unknown only the residual / far ratio falls slowly: the
        # double-talk detector needs both it and the ERL to call a frame the visitor's
        self._fall_unknown = np.array([[LEAK_FALL], [LEAK_FALL_UNPLACED], [LEAK_FALL]], dtype=np.float32)
        self._floor = 10 ** (SUPPRESS_FLOOR_DB / 20)
        self._silent = np.full(k, 10 ** (SINGLE_TALK_FLOOR_DB / 20), dtype=np.float32)
        self._hang = 0

    @property
    def active(self) -> bool:
        """True when frames are actually echo-cancelled."""
        return self.enabled

    @property
    def delay_ms(self) -> int:
        """The far → echo delay the filter is placed at (its start plus the margin)."""
        return (self._lag + PRE_PARTITIONS) * FRAME_MS

    def _check(self, frame: np.ndarray, what: str) -> np.ndarray:
        f = np.asarray(frame, dtype=np.int16).reshape(-1)
        if len(f) != self.frame_samples:
            raise ValueError(
                f"{what} frame must be {self.frame_samples} samples (10 ms at {self.rate} Hz), "
                f"got {len(f)}"
            )
        return f

    def far(self, frame: np.ndarray) -> None:
        """Queue one 10 ms frame of the speaker signal (in playout order)."""
        if not self.enabled:
            return
        self._far.append(self._check(frame, "far").copy())
        if len(self._far) > MAX_FAR_BACKLOG_FRAMES:
            self._far.popleft()
            self.far_dropped += 1
            self._realign(1)

    def near(self, frame: np.ndarray) -> np.ndarray:
        """Echo-reduce one 10 ms microphone frame (a new array, one frame late)."""
        f = self._check(frame, "near")
        if not self.enabled:
            return f.copy()
        self._trim_far()
        if self._far:
            far = self._far.popleft()
        else:
            far = self._silence
            self.far_missing += 1
            self._realign(-1)  # the late frame pairs with the next microphone frame
        self.frames += 1
        out = self._process(far.astype(np.float32), f.astype(np.float32))
        result: np.ndarray = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
        return result

    def _trim_far(self) -> None:
        """Keep the far queue short: queued far frames whose echo already reached the
        microphone cannot be cancelled (the echo would precede its reference)."""
        depth = len(self._far)
        self._min_depth = min(self._min_depth, depth)
        self._depth_frames += 1
        if self._depth_frames < FAR_TRIM_FRAMES:
            return
        extra = self._min_depth - FAR_QUEUE_SLACK
        if self._min_depth > FAR_QUEUE_MAX:
            for _ in range(extra):
                self._far.popleft()
            self.far_trimmed += extra
            self._realign(extra)
        self._min_depth, self._depth_frames = len(self._far), 0

    def _realign(self, frames: int) -> None:
        """The far stream moved ``frames`` against the microphone (+: the echo is now later):
        move the filter, its taps and the delay estimator's lags with it."""
        if not self.enabled:
            return
        self._mismatch = np.roll(self._mismatch, frames)
        if frames > 0:
            self._mismatch[:frames] = 0.5
        elif frames < 0:
            self._mismatch[frames:] = 0.5
        self._move_filter(max(0, min(self._lag + frames, self._lags - 1)), self._lag + frames)

    # ------------------------------------------------------------------ stages

    def _bands(self, power: np.ndarray) -> np.ndarray:
        return np.log10(np.add.reduceat(power, self._band_edges[:-1])[: len(self._band_edges) - 1] + 1.0)

    def _push_far(self, x: np.ndarray, spec: np.ndarray) -> None:
        """Add far frame ``x`` (``spec``: the spectrum of the block it ends) to the history."""
        cap = self._cap
        self._i = i = self._i - 1 if self._i > 0 else cap - 1
        power = spec.real**2 + spec.imag**2
        self._far_now = active = bool(np.max(np.abs(x)) > ACTIVE_PEAK)
        bits = self._bits[i]
        if active:
            bands = self._bands(power)
            self._far_seen += 1
            rate = max(BAND_MEAN_RATE, 1.0 / self._far_seen)
            self._far_mean += rate * (bands - self._far_mean)
            bits = bands > self._far_mean
        for j in (i, i + cap):
            self._xs[j], self._x2[j], self._bits[j] = spec, power, bits
            self._active[j] = active and self._far_seen > DELAY_WARMUP_FRAMES

    def _estimate_delay(self, power: np.ndarray) -> None:
        """One frame of the delay estimator (``power``: the microphone's power spectrum)."""
        bands = self._bands(power)
        self._near_seen += 1
        self._near_mean += max(BAND_MEAN_RATE, 1.0 / self._near_seen) * (bands - self._near_mean)
        if self._near_seen <= DELAY_WARMUP_FRAMES:
            return
        bits = bands > self._near_mean
        i = self._i
        active = self._active[i : i + self._lags]
        if not active.any():
            return
        mismatch = np.mean(self._bits[i : i + self._lags] != bits, axis=1)
        m = self._mismatch
        m[active] += (1 - DELAY_SMOOTHING) * (mismatch[active] - m[active])
        best = int(np.argmin(m))
        if m[best] > DELAY_CONFIDENT or (self._placed and self._lag <= best - PRE_PARTITIONS + 1 <= self._lag + 2):
            self._held = 0
            return
        if best != self._candidate:
            self._candidate, self._held = best, 0
            return
        self._held += 1
        if self._held >= (DELAY_HOLD_FRAMES if self._placed else DELAY_HOLD_FRAMES // 2):
            self._placed = True
            self._move_filter(max(0, min(best - PRE_PARTITIONS, self._lags - 1)))

    def _move_filter(self, lag: int, was: int | None = None) -> None:
        """Place the filter at ``lag``, keeping the taps that still cover the same delays
        (``was``: where the taps' delays now start, if the far stream moved)."""
        shift = lag - (self._lag if was is None else was)
        n = PARTITIONS
        h, p = np.zeros_like(self._h), np.full_like(self._p, KALMAN_P0)
        if abs(shift) < n:
            src = slice(max(0, shift), min(n, n + shift))
            dst = slice(max(0, -shift), min(n, n - shift))
            h[dst], p[dst] = self._h[src], self._p[src]
        self._h, self._p, self._lag, self._held = h, p, lag, 0
        log.debug("echo delay moved delay_ms=%d", self.delay_ms)

    def _process(self, x: np.ndarray, d: np.ndarray) -> np.ndarray:
        m, n = self.frame_samples, PARTITIONS
        self._io[0, :m], self._io[0, m:] = self._io[0, m:], x
        self._io[1, :m], self._io[1, m:] = self._io[1, m:], d
        far_spec, near_spec = np.fft.rfft(self._io)
        self._push_far(x, far_spec)
        d2 = near_spec.real**2 + near_spec.imag**2
        if np.max(np.abs(d)) > ACTIVE_PEAK and not self._hang:  # not silence, not the visitor
            self._estimate_delay(d2)
        i = self._i + self._lag
        xs, x2 = self._xs[i : i + n], self._x2[i : i + n]
        # linear echo estimate (overlap-save: the last half of the block is valid)
        y = np.fft.irfft(np.einsum("ij,ij->j", self._h, xs))[m:]
        e = d - y
        self._eb[m:] = e
        err = np.fft.rfft(self._eb)
        e2 = err.real**2 + err.imag**2
        # Kalman update
        r = np.einsum("ij,ij->j", x2, self._p) + PSI_WEIGHT * self._psi / n + 1e-6
        mu = self._p / r
        if self._hang:  # the visitor is talking: adapt slowly (what the filter hears is not all echo)
            mu *= NEAR_ADAPT
        self._psi += (1 - PSI_SMOOTHING) * (e2 - self._psi)
        a2 = KALMAN_A * KALMAN_A
        self._p = a2 * (1 - 0.5 * mu * x2) * self._p + (1 - a2) * (self._h.real**2 + self._h.imag**2)
        self._h = KALMAN_A * (self._h + mu * xs.conj() * err)
        self._constrain = c = (self._constrain + 1) % (CONSTRAIN_EVERY * n)
        if c % CONSTRAIN_EVERY == 0:  # keep one partition's taps causal (partial constraint)
            taps = np.fft.irfft(self._h[c // CONSTRAIN_EVERY])
            taps[m:] = 0.0
            self._h[c // CONSTRAIN_EVERY] = np.fft.rfft(taps)
        return self._suppress(e, y, x2, d2)

    def _suppress(self, e: np.ndarray, y: np.ndarray, x2: np.ndarray, d2: np.ndarray) -> np.ndarray:
        """Residual echo suppression of the filter's error ``e`` given its echo estimate ``y``.

        ``x2``: far power spectra over the filter's window (the echo's source); ``d2``: the
        microphone's power spectrum.
        """
        m = self.frame_samples
        self._ey[0, :m], self._ey[0, m:] = self._ey[0, m:], e
        self._ey[1, :m], self._ey[1, m:] = self._ey[1, m:], y
        ew, yw = np.fft.rfft(self._window * self._ey)
        ew2 = ew.real**2 + ew.imag**2
        yw2 = yw.real**2 + yw.imag**2
        # the echo's source: far power over the filter's window, or over every lag while the
        # delay is not known yet (any far frame may be what the microphone hears)
        xw2 = TAIL_WEIGHTS @ x2 if self._placed else np.max(self._x2[self._i : self._i + self._cap], axis=0)
        # smoothed spectra: error, echo estimate, far, microphone; and the ratios learnt
        # from them: residual / echo estimate, residual / far, microphone / far (the ERL)
        spectra = self._spectra
        spectra += (1 - SPECTRUM_SMOOTHING) * (np.stack([ew2, yw2, xw2, d2]) - spectra)
        see, syy, sxx, sdd = spectra
        known = self._placed or self._far_seen > self._lags
        self._leaks = _learn(self._leaks, np.stack([see / (syy + 1e-3), see / (sxx + 1e-3), sdd / (sxx + 1e-3)]),
                             (np.stack([yw2, xw2, xw2]) > ECHO_PRESENT) & (self._placed or self._far_now),
                             self._fall_known if known else self._fall_unknown)
        leak_y, leak_x, erl = self._leaks
        # the echo estimate is trusted only once the delay estimator has found an echo
        residual = OVER_SUPPRESSION * (np.maximum(leak_y * yw2, leak_x * xw2) if self._placed else leak_x * xw2)
        ser = ew2 / (residual + 1e-3)
        # double-talk detector: most of the error's energy is in bins where the error is far
        # above the expected residual and the microphone far above the expected echo (the
        # latter does not depend on the linear filter, which may slip for a moment)
        mine = (ser > NEAR_SER) & (d2 > NEAR_SER * erl * xw2)
        near = float(np.dot(ew2, mine)) > NEAR_SHARE * float(np.sum(ew2)) + 1e-3
        self._hang = NEAR_HANGOVER_FRAMES if near else max(0, self._hang - 1)
        gain = np.clip((ser - 1.0) / (ser + 1e-9), self._floor, 1.0) if self._hang else self._silent
        block = np.fft.irfft(gain * ew) * self._window
        out = self._ola + block[:m]
        self._ola = block[m:]
        return out

    # ------------------------------------------------------------------ housekeeping

    def reset(self) -> None:
        """Forget the far queue and the adapted state (e.g. after a device change)."""
        self._far.clear()
        self._reset_state()

    def stats(self) -> dict[str, int | bool]:
        """Counters for status reports."""
        return {
            "aec_active": self.active,
            "aec_far_queued": len(self._far),
            "aec_far_dropped": self.far_dropped,
            "aec_far_missing": self.far_missing,
            "aec_far_trimmed": self.far_trimmed,
            "aec_delay_ms": self.delay_ms,
        }

"""Acoustic echo cancellation on 10 ms frames that keeps the visitor during double talk.

The speaker signal (what is being played, resampled to the internal rate) goes in with
:meth:`EchoCanceller.far`, 10 ms frames in the order they are handed to the output device
(silence included). Microphone frames go through :meth:`EchoCanceller.near`, which pairs each
with the oldest queued far frame (zeros if none is queued) and returns the echo-reduced
frames. Far frames are queued when written to the device and consumed when the microphone
delivers, so the far signal *leads* the echo by the output latency plus the acoustic path;
the delay estimator finds it. The far queue is bounded (:data:`MAX_FAR_BACKLOG_FRAMES`) so
clock drift cannot grow it without limit.

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
3. **Residual echo suppressor** (:mod:`kioskd.audio.echo_suppress`) — learns how much echo
   the filter leaves per bin and removes it where the visitor does not dominate; with no echo
   path the echo estimate is ~0 and nothing is suppressed.

The suppressor works on 50 %-overlapped sqrt-Hann windows, so output lags input by one
frame (10 ms; AEC3's was 8 ms). A block of frames costs less than its frames one by one and
gives exactly the same output: the transforms, powers and bands of the input and the
output transform are done for the whole block; only the adaptive part runs frame by frame,
on preallocated arrays. While the far signal over the filter's window is all zeros, the
filter's estimate and gradient are exactly zero and that work is skipped.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np

from kioskd.audio.echo_suppress import NEAR_SER, Suppressor, irfft_into, power_into, rfft_into, sqrt_hann

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
BLOCK_FRAMES = 10
"""Microphone frames processed per batch (a longer block is split into batches this long)."""
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
NEAR_ADAPT = 0.1
"""Kalman gain factor while the visitor talks."""
AVAILABLE = True
"""The canceller is pure numpy: always available (kept for callers that ask)."""


class _Views:
    """Parts of the filter's work buffer, sliced once. Rows: the gradient block [zeros, error], the windowed
    [last, this] error and echo estimate (the suppressor's), the echo estimate's block (its last half valid)."""

    def __init__(self, eb: np.ndarray, taps: np.ndarray, window: np.ndarray) -> None:
        m = eb.shape[1] // 2
        self.blocks, self.y_block, self.e, self.y = eb[:3], eb[3], eb[0, m:], eb[3, m:]
        self.ey, self.windowed_lo, self.windowed_hi = eb[::3, m:], eb[1:3, :m], eb[1:3, m:]
        self.taps_hi, self.w_lo, self.w_hi = taps[m:], window[:m], window[m:]


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
        self.far_dropped = 0
        self.far_missing = 0
        self.far_trimmed = 0
        self.frames = 0
        self._k = m + 1  # FFT bins of a 2-frame block
        self._lags = MAX_DELAY_MS // FRAME_MS + 1
        self._window = sqrt_hann(2 * m)
        first, stop, step = (int(b * m / 160) for b in DELAY_BANDS)
        self._band_edges = np.arange(first, stop + 1, max(1, step))
        self._reset_state()

    def _reset_state(self) -> None:
        m, k, n, nb = self.frame_samples, self._k, PARTITIONS, len(self._band_edges) - 1
        self._cap = cap = self._lags + n
        # far history, newest first: spectra of [x(t-1), x(t)] and their conjugates, powers, and
        # for the delay estimator binary spectra (0/1), their counts, whether to compare (1.0); a
        # ring of cap + BLOCK_FRAMES slots (a block is pushed before its frames are processed),
        # each written twice (at s and s + ring) so ``[s : s + cap]`` is contiguous
        self._ring = r = cap + BLOCK_FRAMES
        self._xx = np.zeros((2 * r, 2, k), dtype=np.complex64)
        self._x2 = np.zeros((2 * r, k), dtype=np.float32)
        self._meta = np.zeros((2 * r, nb + 2))
        self._bits, self._ones, self._active = self._meta[:, :nb], self._meta[:, nb], self._meta[:, nb + 1]
        self._rings = [a.reshape(2, r, *a.shape[1:]) for a in (self._xx, self._x2, self._meta)]
        self._sound = bytearray(2 * r)  # the slot's spectrum is not all zeros
        self._compare = bytearray(2 * r)  # the delay estimator compares against the slot
        self._i = 0  # slot of the newest far frame
        self._min_depth = self._depth_frames = 0
        self._raw = np.zeros((2, BLOCK_FRAMES + 1, m), dtype=np.float32)  # far, microphone: last frame, block
        self._blocks = [np.lib.stride_tricks.as_strided(self._raw, (2, b, 2 * m), self._raw.strides)
                        for b in range(BLOCK_FRAMES + 1)]  # [last, this] frame blocks of b frames
        self._spec = np.zeros((2, BLOCK_FRAMES, 2, k), dtype=np.complex64)  # far, microphone; conjugate
        self._fmeta = np.zeros((BLOCK_FRAMES, nb + 2))
        self._pow = np.zeros((2, BLOCK_FRAMES, k), dtype=np.float32)
        self._d2_ser = np.zeros((BLOCK_FRAMES, k), dtype=np.float32)
        self._outb = np.zeros((BLOCK_FRAMES, 2 * m), dtype=np.float32)
        # delay estimator
        self._far_mean = np.zeros(nb)
        self._near_mean = np.zeros(nb)
        self._nbits = np.zeros(nb)
        self._mismatch = np.full(self._lags, 0.5)
        self._far_seen = self._near_seen = 0
        self._lag = 0  # the filter's first partition, in frames
        self._placed = False  # the delay estimator has placed the filter
        self._candidate = -1
        self._held = 0
        # Kalman filter and its work buffers
        self._h = np.zeros((n, k), dtype=np.complex64)
        self._p = np.full((n, k), KALMAN_P0, dtype=np.float32)
        self._psi = np.full(k, 1e-6, dtype=np.float32)
        self._psi_in = np.zeros(k, dtype=np.float32)
        self._r = np.zeros(k, dtype=np.float32)
        self._mu = np.zeros((n, k), dtype=np.float32)
        self._hh = np.zeros((n, k), dtype=np.float32)
        self._g = np.zeros((n, k), dtype=np.complex64)
        self._yspec = np.zeros(k, dtype=np.complex64)
        self._taps = np.zeros(2 * m, dtype=np.float32)
        self._constrain = 0
        self._eb = np.zeros((4, 2 * m), dtype=np.float32)  # see _Views; the first three are transformed
        self._es = np.zeros((3, k), dtype=np.complex64)
        self._ep = np.zeros((3, k), dtype=np.float32)
        self._views = _Views(self._eb, self._taps, self._window)
        self._suppressor = Suppressor(k, n)
        self._out = np.zeros((BLOCK_FRAMES, k), dtype=np.complex64)  # gain × windowed error
        self._ola: np.ndarray = np.zeros(m, dtype=np.float32)

    @property
    def active(self) -> bool:
        """True when frames are actually echo-cancelled."""
        return self.enabled

    @property
    def delay_ms(self) -> int:
        """The far → echo delay the filter is placed at (its start plus the margin)."""
        return (self._lag + PRE_PARTITIONS) * FRAME_MS

    def _check(self, frames: np.ndarray, what: str) -> np.ndarray:
        """``frames`` as rows of one frame each (one frame, or a 2-D array of them)."""
        f = np.asarray(frames, dtype=np.int16)
        if f.ndim > 2 or f.shape[-1] != self.frame_samples or f.size == 0:
            raise ValueError(f"{what} frames must be {self.frame_samples} samples (10 ms at {self.rate} Hz) each, "
                             f"got an array of shape {f.shape}")
        return f.reshape(-1, self.frame_samples)

    def far(self, frames: np.ndarray) -> None:
        """Queue 10 ms frames of the speaker signal (one, or rows of them; in playout order)."""
        if not self.enabled:
            return
        for frame in self._check(frames, "far").copy():
            self._far.append(frame)
            if len(self._far) > MAX_FAR_BACKLOG_FRAMES:
                self._far.popleft()
                self.far_dropped += 1
                self._realign(1)

    def near(self, frames: np.ndarray) -> np.ndarray:
        """Echo-reduce 10 ms microphone frames (one, or rows of them): a new array of the same
        shape, one frame late. A block gives what its frames would one by one (to the last bit of rounding)."""
        f = self._check(frames, "near")
        if not self.enabled:
            return f.reshape(np.shape(frames)).copy()
        out = np.empty_like(f)
        for s in range(0, len(f), BLOCK_FRAMES):
            near = f[s : s + BLOCK_FRAMES]
            shifts = [self._take_far(j) for j in range(len(near))]
            self.frames += len(near)
            out[s : s + len(near)] = self._cancel(self._raw[0, 1 : len(near) + 1], near, shifts)
        return out.reshape(np.shape(frames))

    def _take_far(self, j: int) -> list[int]:
        """The far frame for block frame ``j`` into the raw buffer; the moves of the far
        stream against the microphone (see :meth:`_realign`) to apply before the frame."""
        shifts = self._trim_far()
        if self._far:
            self._raw[0, j + 1] = self._far.popleft()
        else:
            self._raw[0, j + 1] = 0.0
            self.far_missing += 1
            shifts.append(-1)  # the late frame pairs with the next microphone frame
        return shifts

    def _trim_far(self) -> list[int]:
        """Keep the far queue short: queued far frames whose echo already reached the
        microphone cannot be cancelled (the echo would precede its reference)."""
        self._min_depth = min(self._min_depth, len(self._far))
        self._depth_frames += 1
        if self._depth_frames < FAR_TRIM_FRAMES:
            return []
        extra = self._min_depth - FAR_QUEUE_SLACK
        trimmed = []
        if self._min_depth > FAR_QUEUE_MAX:
            for _ in range(extra):
                self._far.popleft()
            self.far_trimmed += extra
            trimmed.append(extra)
        self._min_depth, self._depth_frames = len(self._far), 0
        return trimmed

    def _realign(self, frames: int) -> None:
        """The far stream moved ``frames`` against the microphone (+: the echo is now later):
        move the filter, its taps and the delay estimator's lags with it."""
        self._mismatch = np.roll(self._mismatch, frames)
        if frames > 0:
            self._mismatch[:frames] = 0.5
        elif frames < 0:
            self._mismatch[frames:] = 0.5
        self._move_filter(max(0, min(self._lag + frames, self._lags - 1)), self._lag + frames)

    # ------------------------------------------------------------------ stages

    def _cancel(self, far: np.ndarray, near: np.ndarray, shifts: list[list[int]]) -> np.ndarray:
        """A block: ``far`` (float32, in the raw buffer) and ``near`` (int16) frames → output
        frames; ``shifts[j]``: realignments before frame ``j``. What does not depend on the
        adapted state (spectra, powers, bands, the output transform) is done for the whole block."""
        b, m = len(near), self.frame_samples
        raw = self._raw
        raw[1, 1 : b + 1] = near
        spec = rfft_into(self._blocks[b], self._spec[:, :b, 0])
        power = power_into(spec, self._pow[:, :b])
        loud = (np.maximum.reduce(np.abs(raw[:, 1 : b + 1]), axis=2) > ACTIVE_PEAK).tolist()
        bands = np.add.reduceat(power, self._band_edges[:-1], axis=2)[..., : len(self._band_edges) - 1]
        bands += 1.0
        np.log10(bands, out=bands)
        slots, seen = self._push_far(spec[0], power[0], loud[0], bands[0])
        d2_ser = np.multiply(power[1], 1 / NEAR_SER, out=self._d2_ser[:b])
        for j in range(b):
            for shift in shifts[j]:
                self._realign(shift)
            self._frame(j, slots[j], raw[1, j + 1], power[1, j], d2_ser[j], bands[1, j], loud[0][j], loud[1][j],
                        seen[j])
        raw[:, 0] = raw[:, b]
        blk = irfft_into(self._out[:b], self._outb[:b])
        blk *= self._window
        out = blk[:, :m]
        out[0] += self._ola
        out[1:] += blk[:-1, m:]
        self._ola[:] = blk[b - 1, m:]
        np.rint(out, out=out)
        np.minimum(out, 32767, out=out)
        np.maximum(out, -32768, out=out)
        return out.astype(np.int16)

    def _push_far(self, spec: np.ndarray, power: np.ndarray, loud: list[bool],
                  bands: np.ndarray) -> tuple[list[int], list[int]]:
        """Add a block's far frames (their blocks' spectra, powers, loudness, bands) to the
        history; their slots, and how many loud far frames were seen by each."""
        b, r, nb = len(spec), self._ring, bands.shape[1]
        meta, seen = self._fmeta[:b], []
        meta[:] = 0.0
        for j in range(b):
            if loud[j]:
                self._far_seen += 1
                rate = max(BAND_MEAN_RATE, 1.0 / self._far_seen)
                self._far_mean += rate * (bands[j] - self._far_mean)
                np.greater(bands[j], self._far_mean, out=meta[j, :nb])
                meta[j, nb + 1] = self._far_seen > DELAY_WARMUP_FRAMES
            seen.append(self._far_seen)
        np.add.reduce(meta[:, :nb], axis=1, out=meta[:, nb])
        xx = self._spec[0, :b]
        np.conjugate(spec, out=xx[:, 1])
        slots = [(self._i - 1 - j) % r for j in range(b)]  # newest first
        for ring, value in zip(self._rings, (xx, power, meta), strict=True):
            ring[:, slots] = np.asarray(value)
        self._i = slots[-1]
        sounds = np.logical_or.reduce(spec, axis=1).tolist()
        for slot, sound, compare in zip(slots, sounds, meta[:, nb + 1].tolist(), strict=True):
            self._sound[slot] = self._sound[slot + r] = sound
            self._compare[slot] = self._compare[slot + r] = compare > 0
        return slots, seen

    def _estimate_delay(self, bands: np.ndarray, i: int) -> None:
        """One frame of the delay estimator (``bands``: the microphone's; ``i``: the far slot)."""
        self._near_seen += 1
        self._near_mean += max(BAND_MEAN_RATE, 1.0 / self._near_seen) * (bands - self._near_mean)
        if self._near_seen <= DELAY_WARMUP_FRAMES:
            return
        if not any(self._compare[i : i + self._lags]):
            return
        bits = self._nbits
        np.greater(bands, self._near_mean, out=bits)
        # the share of bands in which the far frame at each lag and this one differ
        mismatch = self._bits[i : i + self._lags] @ bits
        mismatch *= -2.0
        mismatch += self._ones[i : i + self._lags]
        mismatch += np.add.reduce(bits)
        mismatch /= len(bits)
        m = self._mismatch
        mismatch -= m
        mismatch *= self._active[i : i + self._lags]
        mismatch *= 1 - DELAY_SMOOTHING
        m += mismatch
        best = int(m.argmin())
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

    def _frame(self, j: int, i: int, d: np.ndarray, d2: np.ndarray, d2_ser: np.ndarray, bands: np.ndarray,
               far_now: bool, near_now: bool, seen: int) -> None:
        """Block frame ``j``: far slot ``i``, microphone frame ``d`` (its block's power ``d2``,
        ÷ :data:`NEAR_SER`, and ``bands``), whether the far and microphone frames are loud, loud
        far frames ``seen``."""
        n = PARTITIONS
        if near_now and not self._suppressor.hang:  # not silence, not the visitor
            self._estimate_delay(bands, i)
        s = i + self._lag
        x2, h, p, g, mu, v = self._x2[s : s + n], self._h, self._p, self._g, self._mu, self._views
        sound = any(self._sound[s : s + n])  # else the echo estimate and the gradient are exactly 0
        if sound:  # linear echo estimate (overlap-save: the last half of the block is valid)
            np.multiply(h, self._xx[s : s + n, 0], out=g)
            irfft_into(np.add.reduce(g, axis=0, out=self._yspec), v.y_block)
            np.subtract(d, v.y, out=v.e)
        else:
            v.e[:] = d
            v.y[:] = 0.0
        np.multiply(v.ey, v.w_hi, out=v.windowed_hi)
        es, ep = rfft_into(v.blocks, self._es), power_into(self._es, self._ep)
        np.multiply(v.ey, v.w_lo, out=v.windowed_lo)  # the next frame's first halves
        # Kalman update (the old |h|² feeds the state uncertainty)
        hh = power_into(h, self._hh)
        hh *= 1 - KALMAN_A * KALMAN_A
        if sound:
            r = self._r
            np.multiply(x2, p, out=mu)
            np.add.reduce(mu, axis=0, out=r)
            r += self._psi
            if self._suppressor.hang:  # the visitor is talking: adapt slowly (what the filter hears is not all echo)
                r *= 1 / NEAR_ADAPT
            np.divide(p, r, out=mu)
            np.multiply(mu, self._xx[s : s + n, 1], out=g)
            g *= es[0]
            h += g
            mu *= x2
            mu *= -0.5 * KALMAN_A * KALMAN_A
            mu += KALMAN_A * KALMAN_A
            p *= mu
        else:
            p *= KALMAN_A * KALMAN_A
        p += hh
        h *= KALMAN_A
        # the observation noise, as it enters the gain: PSI_WEIGHT / n × smoothed error power + 1e-6
        self._psi *= PSI_SMOOTHING
        np.multiply(ep[0], (1 - PSI_SMOOTHING) * PSI_WEIGHT / n, out=self._psi_in)
        self._psi += self._psi_in
        self._psi += (1 - PSI_SMOOTHING) * 1e-6
        self._constrain = c = (self._constrain + 1) % (CONSTRAIN_EVERY * n)
        if c % CONSTRAIN_EVERY == 0:  # keep one partition's taps causal (partial constraint)
            irfft_into(h[c // CONSTRAIN_EVERY], self._taps)
            v.taps_hi[:] = 0.0
            rfft_into(self._taps, h[c // CONSTRAIN_EVERY])
        placed = self._placed
        self._suppressor.frame(es, ep, d2, d2_ser, x2 if placed else self._x2[i : i + self._cap], placed, far_now,
                               placed or seen > self._lags, self._out[j])

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

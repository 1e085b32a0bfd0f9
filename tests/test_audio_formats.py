"""Tests for kioskd.audio.formats: format names, μ-law, PCM, resampling, levels."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kioskd.audio.formats import (
    FRAME_SAMPLES,
    INTERNAL_RATE,
    SILENCE_DBFS,
    AudioFormat,
    Resampler,
    dbfs,
    decode,
    encode,
    to_mono,
)

ALL_FORMATS = [
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "pcm_48000",
    "ulaw_8000",
]
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)


def test_internal_frame_is_10_ms() -> None:
    assert FRAME_SAMPLES / INTERNAL_RATE == 0.010


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_parse_round_trips_name(name: str) -> None:
    fmt = AudioFormat.parse(name)
    assert fmt.name == name
    assert str(fmt) == name
    assert fmt.rate == int(name.split("_")[1])
    assert fmt.bytes_per_sample == (1 if name.startswith("ulaw") else 2)


@pytest.mark.parametrize(
    "bad", ["", "pcm", "pcm_", "pcm_16k", "pcm_11025", "ulaw_16000", "mp3_44100", "PCM_16000",
            "pcm_016000", "pcm_16000_x", " pcm_16000"]
)
def test_parse_rejects_and_names_bad_string(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        AudioFormat.parse(bad)
    assert repr(bad) in str(info.value)


def test_duration() -> None:
    assert AudioFormat.parse("pcm_16000").duration(32000) == 1.0
    assert AudioFormat.parse("pcm_16000").duration(321) == 160 / 16000  # odd byte: no sample
    assert AudioFormat.parse("ulaw_8000").duration(80) == 0.010
    assert AudioFormat.parse("pcm_44100").duration(0) == 0.0


def test_ulaw_known_values() -> None:
    fmt = AudioFormat.parse("ulaw_8000")
    # -1 → 0x7E (-8): the Sun g711.c / audioop rounding of negative values (floor >> 2).
    samples = np.array([0, -1, 32767, -32768, 8, -8, 1000], dtype=np.int16)
    assert encode(samples, fmt) == bytes([0xFF, 0x7E, 0x80, 0x00, 0xFE, 0x7E, 0xCE])
    decoded = decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xFE, 0x7E]), fmt)
    assert decoded.dtype == np.int16
    assert decoded.tolist() == [0, 0, 32124, -32124, 8, -8]


def test_ulaw_table_is_monotonic_and_symmetric() -> None:
    fmt = AudioFormat.parse("ulaw_8000")
    levels = decode(bytes(range(256)), fmt).astype(np.int32)
    # 0x80..0xFF are positive, decreasing in magnitude; 0x00..0x7F their negatives.
    assert np.all(np.diff(levels[0x80:]) < 0)
    assert np.array_equal(levels[:0x80], -levels[0x80:])


def test_ulaw_within_quantisation_error_for_every_int16() -> None:
    fmt = AudioFormat.parse("ulaw_8000")
    back = decode(encode(ALL_INT16, fmt), fmt).astype(np.int32)
    x = ALL_INT16.astype(np.int32)
    err = np.abs(back - x)
    # G.711 segment n has step 2**(n+3) (n = 0..7): error is at most one step, and
    # relative error of a segment's step is bounded by ~1/16 of the magnitude above 256.
    clipped = np.abs(x) > 32124
    assert np.all(err[~clipped] <= np.maximum(8, np.abs(x[~clipped]) // 16 + 8))
    assert np.all(np.abs(back[clipped]) == 32124)
    # decode∘encode is idempotent on decoded values (every code is its own fixed point).
    assert np.array_equal(decode(encode(back.astype(np.int16), fmt), fmt), back)


def test_ulaw_matches_cpython_audioop() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # removed in Python 3.13
    fmt = AudioFormat.parse("ulaw_8000")
    assert encode(ALL_INT16, fmt) == audioop.lin2ulaw(ALL_INT16.tobytes(), 2)
    assert decode(bytes(range(256)), fmt).tobytes() == audioop.ulaw2lin(bytes(range(256)), 2)


@pytest.mark.parametrize("name", [n for n in ALL_FORMATS if n.startswith("pcm")])
def test_pcm_round_trip_exact(name: str) -> None:
    fmt = AudioFormat.parse(name)
    data = encode(ALL_INT16, fmt)
    assert len(data) == 2 * len(ALL_INT16)
    assert data[:4] == bytes([0x00, 0x80, 0x01, 0x80])  # little-endian -32768, -32767
    assert np.array_equal(decode(data, fmt), ALL_INT16)


@given(arrays(np.int16, st.integers(0, 400)), st.sampled_from(ALL_FORMATS))
def test_round_trip_every_format(samples: np.ndarray, name: str) -> None:
    fmt = AudioFormat.parse(name)
    data = encode(samples, fmt)
    assert len(data) == len(samples) * fmt.bytes_per_sample
    back = decode(data, fmt)
    assert back.dtype == np.int16 and back.shape == samples.shape
    if fmt.encoding == "pcm":
        assert np.array_equal(back, samples)
    else:
        err = np.abs(back.astype(np.int32) - samples.astype(np.int32))
        bound = np.maximum(8, np.abs(samples.astype(np.int32)) // 16 + 8)
        assert np.all((err <= bound) | (np.abs(samples.astype(np.int32)) > 32124))


def test_decode_drops_odd_trailing_byte() -> None:
    fmt = AudioFormat.parse("pcm_16000")
    assert decode(b"\x01\x00\x02", fmt).tolist() == [1]
    assert decode(b"\x07", fmt).tolist() == []
    assert decode(b"", fmt).tolist() == []


def test_to_mono_averages_and_drops_partial_frame() -> None:
    stereo = np.array([100, 300, -32768, -32768, 32767, 32767, 1, 2, 9], dtype=np.int16)
    assert to_mono(stereo, 2).tolist() == [200, -32768, 32767, 2]  # 1.5 rounds to even 2
    mono = np.array([1, 2, 3], dtype=np.int16)
    out = to_mono(mono, 1)
    assert out.tolist() == [1, 2, 3] and out is not mono
    with pytest.raises(ValueError):
        to_mono(mono, 0)


def test_dbfs() -> None:
    assert dbfs(np.zeros(160, np.int16)) == SILENCE_DBFS
    assert dbfs(np.zeros(0, np.int16)) == SILENCE_DBFS
    square = np.array([-32768, -32768] * 80, dtype=np.int16)
    assert dbfs(square) == 0.0
    t = np.arange(16000)
    sine = np.round(np.sin(2 * np.pi * 1000 * t / 16000) * 16384).astype(np.int16)
    assert dbfs(sine) == pytest.approx(-6.0206 - 3.0103, abs=0.01)
    assert dbfs(np.array([1], np.int16)) == pytest.approx(20 * math.log10(1 / 32768))


def _sine(freq: float, rate: int, seconds: float, amp: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def test_resampler_identity_fast_path() -> None:
    r = Resampler(16000, 16000)
    assert r.identity
    x = _sine(440, 16000, 0.01)
    out = r.process(x)
    assert np.array_equal(out, x) and out is not x


@pytest.mark.parametrize(("src", "dst"), [(16000, 48000), (48000, 16000), (44100, 16000),
                                          (16000, 22050), (24000, 16000), (8000, 16000)])
def test_resampler_streaming_length_and_content(src: int, dst: int) -> None:
    x = _sine(440, src, 1.0)
    r = Resampler(src, dst)
    chunk = src // 100
    parts = [r.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    parts.append(r.process(np.zeros(0, np.int16), last=True))
    out = np.concatenate(parts)
    assert out.dtype == np.int16
    assert abs(len(out) - dst) <= 1
    # Same tone, same level: compare with an ideal sine at the output rate (mid part,
    # away from the filter's start-up and flush).
    ideal = _sine(440, dst, len(out) / dst)
    mid = slice(len(out) // 4, 3 * len(out) // 4)
    residual = out[mid].astype(np.float64) - ideal[mid]
    assert dbfs(out[mid]) == pytest.approx(dbfs(ideal[mid]), abs=0.1)
    assert dbfs(residual.astype(np.int16)) < dbfs(ideal[mid]) - 40  # ≥ 40 dB SNR


def test_resampler_stereo_interleaved() -> None:
    left = _sine(440, 48000, 0.5)
    right = (left // 2).astype(np.int16)
    inter = np.stack([left, right], axis=1).reshape(-1)
    r = Resampler(48000, 16000, channels=2)
    out = np.concatenate([r.process(inter[i : i + 960]) for i in range(0, len(inter), 960)]
                         + [r.process(np.zeros(0, np.int16), last=True)])
    frames = out.reshape(-1, 2)
    assert abs(len(frames) - 8000) <= 1
    mid = slice(2000, 6000)
    assert dbfs(frames[mid, 0]) - dbfs(frames[mid, 1]) == pytest.approx(6.02, abs=0.1)


def test_resampler_rejects_bad_rates() -> None:
    with pytest.raises(ValueError):
        Resampler(0, 16000)
    with pytest.raises(ValueError):
        Resampler(16000, 16000, channels=0)


STREAM_PAIRS = [(48000, 16000), (16000, 8000), (16000, 22050), (16000, 24000), (16000, 44100),
                (16000, 48000), (8000, 16000), (44100, 16000)]
MAX_RESAMPLER_DELAY_S = 0.006
"""Most audio the resampler may hold back (its filter delay), in seconds."""


@pytest.mark.parametrize(("src", "dst"), STREAM_PAIRS)
def test_resampler_gives_output_on_every_10ms_call(src: int, dst: int) -> None:
    """No bursts: each 10 ms in gives 10 ms out (±1 sample), after a first call short by the delay."""
    r = Resampler(src, dst)
    x = _sine(440, src, 0.5)
    chunk = src // 100
    sizes = [len(r.process(x[i : i + chunk])) for i in range(0, len(x), chunk)]
    per_call = dst / 100
    assert all(abs(n - per_call) <= 1 for n in sizes[1:]), sizes
    assert per_call - MAX_RESAMPLER_DELAY_S * dst <= sizes[0] < per_call
    tail = r.process(np.zeros(0, np.int16), last=True)
    assert sum(sizes) + len(tail) == round(len(x) * dst / src)


@pytest.mark.parametrize(("src", "dst"), [(48000, 16000), (44100, 16000), (16000, 8000), (24000, 16000)])
def test_resampler_rejects_aliases(src: int, dst: int) -> None:
    """A tone 1.5 kHz above the output's Nyquist is gone (it would alias into the pass band)."""
    above = dst / 2 + 1500
    r = Resampler(src, dst)
    x = _sine(above, src, 0.5)
    chunk = src // 100
    out = np.concatenate([r.process(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    assert dbfs(out[len(out) // 4 :]) < dbfs(x) - 60


def test_resampler_keeps_the_upper_speech_band() -> None:
    """7 kHz passes 48k → 16k within 1 dB (speech keeps its sibilants)."""
    r = Resampler(48000, 16000)
    x = _sine(7000, 48000, 0.5)
    out = np.concatenate([r.process(x[i : i + 480]) for i in range(0, len(x), 480)])
    assert dbfs(out[len(out) // 4 :]) == pytest.approx(dbfs(x), abs=1.0)

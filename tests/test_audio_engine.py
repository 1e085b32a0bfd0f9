"""AudioEngine end to end: ALSA file PCMs → PortAudio → engine → uplink / file, wav:, failures.

The devices are clockless, so the engine paces them on the monotonic clock; assertions
are about content and state, never about timing.
"""

from __future__ import annotations

import dataclasses
import threading
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
import trio

from alsa_pcm import PACING, AlsaFiles, alsa_devices
from kioskd.audio import devices
from kioskd.audio.engine import AudioEngine
from kioskd.audio.formats import AudioFormat, decode, encode
from kioskd.config import AudioConfig

LIMIT = 10.0  # every test's bound (seconds)
FAST = {"backoff_base": 0.02, "backoff_cap": 0.05}


@pytest.fixture(scope="session")
def alsa(tmp_path_factory: pytest.TempPathFactory) -> AlsaFiles:
    return alsa_devices(tmp_path_factory.getbasetemp() / "alsa")


def cfg(**kw: Any) -> AudioConfig:
    base: dict[str, Any] = dict(input="kiosk_mic", output="kiosk_spk", echo="off", preroll_ms=2000, fade_ms=0,
                                pacing=PACING)
    base.update(kw)
    return AudioConfig(**base)


def chirp(rate: int, seconds: float, amp: float = 12000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    f = 200 + 1500 * t / seconds
    return (amp * np.sin(2 * np.pi * np.cumsum(f) / rate)).astype(np.int16)


def best_correlation(got: np.ndarray, ref: np.ndarray, max_lag: int = 200) -> float:
    """Largest normalised correlation of ``ref`` against ``got`` over lags 0..max_lag."""
    best = 0.0
    r = ref.astype(np.float64)
    for lag in range(max_lag + 1):
        g = got[lag : lag + len(r)].astype(np.float64)
        if len(g) < len(r):
            break
        denom = np.linalg.norm(g) * np.linalg.norm(r)
        if denom:
            best = max(best, float(g @ r / denom))
    return best


@asynccontextmanager
async def running(config: AudioConfig, **kw: Any) -> AsyncIterator[AudioEngine]:
    engine = AudioEngine(config, **{**FAST, **kw})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield engine
        nursery.cancel_scope.cancel()


async def wait_for(pred: Callable[[], bool]) -> None:
    while not pred():
        await trio.sleep(0.01)


async def collect(uplink: Any, n_bytes: int) -> bytes:
    out = b""
    while len(out) < n_bytes:
        out += await uplink.receive()
    return out


# ------------------------------------------------------------------ capture


async def test_capture_reaches_the_uplink_intact(alsa: AlsaFiles) -> None:
    signal = chirp(16000, 0.5)
    alsa.write_input("kiosk_mic", signal)
    with trio.fail_after(LIMIT):
        async with running(cfg(input_rate=16000)) as engine:
            assert engine.status()["input_ok"]
            uplink = engine.open_uplink(AudioFormat.parse("pcm_16000"))  # pre-roll holds everything so far
            data = await collect(uplink, 2 * len(signal))
            uplink.close()
    got = decode(data, AudioFormat.parse("pcm_16000"))
    assert np.array_equal(got[: len(signal)], signal)


@pytest.fixture
def stereo_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make kioskd open two channels, as on a device that reports exactly two."""
    monkeypatch.setattr(devices, "choose_channels", lambda max_channels: 2)


async def test_48k_stereo_device_gives_16k_mono_frames(alsa: AlsaFiles, stereo_only: None) -> None:
    mono = chirp(48000, 0.5)
    alsa.write_input("kiosk_mic48", np.stack([mono, mono // 2], axis=1).reshape(-1))  # L, R=L/2
    frames: list[np.ndarray] = []
    pcm16 = AudioFormat.parse("pcm_16000")
    with trio.fail_after(LIMIT):
        async with running(cfg(input="kiosk_mic48", input_rate=48000)) as engine:
            uplink = engine.open_uplink(pcm16)  # pre-roll: everything since the device opened
            engine.add_frame_listener(lambda f, t: frames.append(f.copy()))
            got = decode(await collect(uplink, 2 * 7000), pcm16)
            ulaw = engine.open_uplink(AudioFormat.parse("ulaw_8000"))
            assert len(await ulaw.receive()) > 0
            status = engine.status()
    assert status["input_ok"] and status["input_format"] == "48000Hz x2"
    assert frames and all(f.shape == (160,) and f.dtype == np.int16 for f in frames)
    ref = soxr.resample(mono, 48000, 16000)  # the downmix (L+R)/2 is 0.75*L: same shape
    assert best_correlation(got, ref[200:6000], max_lag=400) > 0.98


async def test_mic_disabled_sends_silence(alsa: AlsaFiles) -> None:
    alsa.write_input("kiosk_mic", chirp(16000, 1.0))
    with trio.fail_after(LIMIT):
        async with running(cfg(input_rate=16000, preroll_ms=0)) as engine:
            engine.mic_enabled = False
            uplink = engine.open_uplink(AudioFormat.parse("pcm_16000"))
            data = await collect(uplink, 3200)
    assert not decode(data, AudioFormat.parse("pcm_16000")).any()


# ------------------------------------------------------------------ playback

FORMATS = ["pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000", "ulaw_8000"]


async def play(engine: AudioEngine, fmt: AudioFormat, samples: np.ndarray) -> None:
    playback = engine.open_playback(fmt)
    data = encode(samples, fmt)
    step = fmt.bytes_per_sample * fmt.rate // 10  # 100 ms messages
    for i in range(0, len(data), step):
        playback.push(1, data[i : i + step])
    assert playback.speaking
    await wait_for(lambda: not playback.speaking)
    await trio.sleep(0.05)  # one more pass for the resampler tail's neighbour periods


@pytest.mark.parametrize("name", FORMATS)
async def test_agent_audio_reaches_the_speaker_in_every_format(alsa: AlsaFiles, name: str) -> None:
    fmt = AudioFormat.parse(name)
    sent = chirp(fmt.rate, 0.4)
    with trio.fail_after(LIMIT):
        async with running(cfg()) as engine:  # device default rate (44.1 kHz for file PCMs)
            await wait_for(lambda: engine.status()["output_ok"])
            rate = engine.status()["output_format"]
            await play(engine, fmt, sent)
    assert rate == "44100Hz x1"
    out = alsa.read_output("kiosk_spk")
    start = int(np.argmax(np.abs(out) > 200))
    ref = soxr.resample(decode(encode(sent, fmt), fmt), fmt.rate, 44100)
    assert best_correlation(out[max(0, start - 100) :], ref[300:-300], max_lag=800) > 0.97


async def test_stereo_48k_speaker_gets_both_channels(alsa: AlsaFiles, stereo_only: None) -> None:
    fmt = AudioFormat.parse("pcm_16000")
    sent = chirp(16000, 0.3)
    with trio.fail_after(LIMIT):
        async with running(cfg(output="kiosk_spk48", output_rate=48000)) as engine:
            await wait_for(lambda: engine.status()["output_ok"])
            await play(engine, fmt, sent)
    out = alsa.read_output("kiosk_spk48")
    left, right = out[0::2], out[1::2]
    assert np.array_equal(left, right)
    start = int(np.argmax(np.abs(left) > 200))
    ref = soxr.resample(sent, 16000, 48000)
    assert best_correlation(left[max(0, start - 100) :], ref[300:-300], max_lag=800) > 0.97


async def test_interrupt_silences_at_once_and_drops_late_audio(alsa: AlsaFiles) -> None:
    fmt = AudioFormat.parse("pcm_16000")
    with trio.fail_after(LIMIT):
        async with running(cfg()) as engine:
            await wait_for(lambda: engine.status()["output_ok"])
            playback = engine.open_playback(fmt)
            playback.push(3, encode(chirp(16000, 2.0), fmt))
            await trio.sleep(0.2)
            playback.interrupt(4)  # the interrupting turn's id: 3 is dead
            playback.push(3, encode(chirp(16000, 1.0), fmt))  # late audio of a dead event
            await wait_for(lambda: not playback.speaking)
            played = engine.status()["jitter"]["played_ms"]
    assert played < 1000


# ------------------------------------------------------------------ wav: devices


async def test_wav_input_and_output(tmp_path: Path) -> None:
    mono = chirp(22050, 0.5)
    with wave.open(str(tmp_path / "in.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(np.repeat(mono, 2).astype("<i2").tobytes())
    out_path = tmp_path / "out.wav"
    config = cfg(input=f"wav:{tmp_path / 'in.wav'}", output=f"wav:{out_path}", output_rate=24000)
    fmt = AudioFormat.parse("pcm_24000")
    sent = chirp(24000, 0.3)
    with trio.fail_after(LIMIT):
        async with running(config) as engine:
            uplink = engine.open_uplink(AudioFormat.parse("pcm_16000"))
            got = decode(await collect(uplink, 2 * 8000), AudioFormat.parse("pcm_16000"))
            await play(engine, fmt, sent)
            with wave.open(str(out_path), "rb") as w:  # valid while the engine still writes it
                assert (w.getframerate(), w.getnchannels()) == (24000, 1)
                recorded = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert len(recorded) * 2 + 44 <= out_path.stat().st_size
    assert best_correlation(got, soxr.resample(mono, 22050, 16000)[200:7000], max_lag=400) > 0.98
    start = int(np.argmax(np.abs(recorded) > 200))
    assert np.array_equal(recorded[start : start + 6000], sent[np.argmax(np.abs(sent) > 200) :][:6000])


# ------------------------------------------------------------------ failures


async def test_missing_devices_are_survived_and_reported(alsa: AlsaFiles) -> None:
    with trio.fail_after(LIMIT):
        async with running(cfg(input="no_such_mic", output="no_such_speaker")) as engine:
            await wait_for(lambda: engine.status()["input_failures"] >= 2 and engine.status()["output_failures"] >= 2)
            status = engine.status()
            playback = engine.open_playback(AudioFormat.parse("pcm_16000"))
            playback.push(1, b"\x00\x01" * 1600)  # no speaker: dropped, not queued forever
            assert not playback.speaking
    assert not status["input_ok"] and not status["output_ok"]
    assert "no_such" in status["last_device_error"]


async def test_input_recovers_when_the_device_comes_back(alsa: AlsaFiles, tmp_path: Path) -> None:
    alsa.infile("kiosk_mic_gone").unlink(missing_ok=True)
    frames: list[np.ndarray] = []
    config = cfg(input="kiosk_mic_gone", input_rate=16000, output=f"wav:{tmp_path / 'o.wav'}")
    try:
        with trio.fail_after(LIMIT):
            async with running(config) as engine:
                engine.add_frame_listener(lambda f, t: frames.append(f))
                await wait_for(lambda: engine.status()["input_failures"] >= 2)
                assert not engine.status()["input_ok"] and not frames
                alsa.write_input("kiosk_mic_gone", chirp(16000, 1.0))
                await wait_for(lambda: engine.status()["input_ok"] and len(frames) > 10)
    finally:
        alsa.infile("kiosk_mic_gone").unlink(missing_ok=True)


async def test_read_error_mid_run_reopens(alsa: AlsaFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    alsa.write_input("kiosk_mic", chirp(16000, 1.0))
    real_read = devices.PyAudioStream.read
    fail = threading.Event()

    def read(self: devices.PyAudioStream, frames: int) -> np.ndarray:
        if fail.is_set():
            fail.clear()
            raise OSError(-9981, "Input overflowed / device unplugged")
        return real_read(self, frames)

    monkeypatch.setattr(devices.PyAudioStream, "read", read)
    frames: list[np.ndarray] = []
    with trio.fail_after(LIMIT):
        async with running(cfg(input_rate=16000)) as engine:
            engine.add_frame_listener(lambda f, t: frames.append(f))
            await wait_for(lambda: len(frames) > 5)
            fail.set()
            await wait_for(lambda: engine.status()["input_failures"] == 1)
            assert "unplugged" in engine.status()["last_device_error"]
            count = len(frames)
            await wait_for(lambda: engine.status()["input_ok"] and len(frames) > count + 5)


async def test_cancel_closes_devices_and_they_reopen_at_once(alsa: AlsaFiles) -> None:
    def audio_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("kioskd-")]

    with trio.fail_after(LIMIT):
        for _ in range(3):
            async with running(cfg(input_rate=16000)) as engine:
                assert engine.status()["input_ok"] and engine.status()["output_ok"]
            assert audio_threads() == []


# ------------------------------------------------------------------ echo handling


async def test_half_duplex_mutes_the_mic_while_speaking(alsa: AlsaFiles) -> None:
    alsa.write_input("kiosk_mic", np.full(16000 * 3, 5000, dtype=np.int16))
    heard: list[tuple[bool, bool]] = []
    with trio.fail_after(LIMIT):
        async with running(cfg(input_rate=16000, echo="half_duplex")) as engine:
            engine.add_frame_listener(lambda f, t: heard.append((engine.speaking, bool(f.any()))))
            await wait_for(lambda: engine.status()["output_ok"] and len(heard) > 5)
            await play(engine, AudioFormat.parse("pcm_16000"), chirp(16000, 0.3))
    assert any(loud for _, loud in heard)  # mic audible outside playback
    assert all(not loud for speaking, loud in heard if speaking)


async def test_aec_mode_runs_with_far_end_reference(alsa: AlsaFiles) -> None:
    alsa.write_input("kiosk_mic", chirp(16000, 1.0, amp=3000))
    frames: list[np.ndarray] = []
    with trio.fail_after(LIMIT):
        async with running(cfg(input_rate=16000, echo="aec")) as engine:
            engine.add_frame_listener(lambda f, t: frames.append(f))
            await play(engine, AudioFormat.parse("pcm_16000"), chirp(16000, 0.3))
            await wait_for(lambda: len(frames) > 50)
    assert all(f.shape == (160,) for f in frames)


def test_config_defaults_are_usable() -> None:
    assert dataclasses.replace(cfg(), echo="off").device_period_ms == 10


def locate(got: np.ndarray, signal: np.ndarray) -> int:
    """Where ``got`` starts in ``signal``, asserting it is one contiguous stretch of it."""
    starts = [int(i) for i in np.flatnonzero(signal == got[0]) if np.array_equal(signal[i : i + 64], got[:64])]
    assert len(starts) == 1, starts
    k = starts[0]
    assert np.array_equal(got, signal[k : k + len(got)])  # no gap, no repeat
    return k


async def test_idle_capture_keeps_the_preroll_in_the_thread_and_hands_it_over_exactly(alsa: AlsaFiles) -> None:
    """While nothing needs frames, no block reaches Trio; an uplink gets the thread's
    pre-roll and the live audio after it without a gap or a repeat, in chunk-long
    reads; closing it stops the hand-off again, and a second uplink continues exactly."""
    from kioskd.audio.engine import IDLE_CAPTURE_PERIODS, QUIET_CAPTURE_PERIODS

    rng = np.random.default_rng(5)
    signal = rng.integers(-20000, 20000, size=16000 * 4).astype(np.int16)  # unique stretches
    alsa.write_input("kiosk_mic", signal)
    pcm = AudioFormat.parse("pcm_16000")
    preroll = 300
    with trio.fail_after(LIMIT):
        async with running(cfg(input_rate=16000, preroll_ms=preroll)) as engine:
            cap = engine._capture
            assert cap is not None
            await wait_for(lambda: cap.frames_read >= 16 * (preroll + 300))
            assert cap.block_periods == QUIET_CAPTURE_PERIODS and cap.blocks_posted == 0
            for _ in range(2):
                read_before = cap.frames_read
                uplink = engine.open_uplink(pcm)
                assert cap.block_periods == engine.config.chunk_ms // 10
                got = decode(await collect(uplink, 2 * 16 * (preroll + 200)), pcm)
                uplink.close()
                assert cap.block_periods == QUIET_CAPTURE_PERIODS
                k = locate(got, signal)
                # the pre-roll: the last preroll_ms before the uplink opened (the thread may
                # have finished one more block meanwhile)
                block = 160 * QUIET_CAPTURE_PERIODS
                assert read_before - 16 * preroll <= k <= read_before + block - 16 * preroll
                posted = cap.blocks_posted
                until = read_before + 16 * (2 * preroll + 400)
                await wait_for(lambda: cap.frames_read >= until)  # noqa: B023 - awaited here
                assert cap.blocks_posted <= posted + 1  # at most one block was already in flight
            heard: list[float] = []
            listener = lambda frame, t: heard.append(t)  # noqa: E731
            engine.add_frame_listener(listener)
            assert cap.block_periods == IDLE_CAPTURE_PERIODS
            await wait_for(lambda: len(heard) >= 2 * IDLE_CAPTURE_PERIODS)
            engine.remove_frame_listener(listener)
    first_block = heard[:IDLE_CAPTURE_PERIODS]
    assert np.allclose(np.diff(first_block), 0.01)  # frames of one block, 10 ms apart


async def test_a_gated_listener_gets_the_loud_blocks_only_and_nothing_from_a_quiet_room(alsa: AlsaFiles) -> None:
    """A listener that ignores frames under -45 dBFS (the voice wake): the capture thread
    hands over only the blocks with a loud frame in them, every loud frame included."""
    from kioskd.audio.engine import GATED_CAPTURE_PERIODS

    rng = np.random.default_rng(3)

    def quiet(seconds: float) -> np.ndarray:
        return rng.integers(-20, 21, size=int(16000 * seconds)).astype(np.int16)

    tone = (3000 * np.sin(2 * np.pi * 440 * np.arange(4800) / 16000)).astype(np.int16)  # 0.3 s, about -20 dBFS
    alsa.write_input("kiosk_mic", np.concatenate([quiet(1.0), tone, quiet(1.0)]))
    got: list[np.ndarray] = []
    with trio.fail_after(LIMIT):
        async with running(cfg(input_rate=16000, preroll_ms=500)) as engine:
            engine.add_frame_listener(lambda f, t: got.append(f.copy()), min_dbfs=-45.0)
            cap = engine._capture
            assert cap is not None
            await wait_for(lambda: cap.frames_read >= 16000 * 2.3)
            assert cap.block_periods == GATED_CAPTURE_PERIODS and cap.gate_dbfs == -45.0
            posted = cap.blocks_posted
    assert len(got) == 30 and all(np.array_equal(f, tone[i * 160 : (i + 1) * 160]) for i, f in enumerate(got))
    assert posted == 30 // GATED_CAPTURE_PERIODS  # the quiet second on either side: no hand-off at all

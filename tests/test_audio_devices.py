"""Devices: ALSA file PCMs through PortAudio, wav: devices, pacing, device threads."""

from __future__ import annotations

import stat
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from alsa_pcm import AlsaFiles, alsa_devices
from kioskd.audio import devices, wavio
from kioskd.audio.device_threads import CaptureThread, PlaybackThread
from kioskd.audio.devices import DeviceError, DeviceFailed, DeviceOpened, find_device, list_devices, open_stream
from kioskd.audio.pacer import Pacer


@pytest.fixture(scope="session")
def alsa(tmp_path_factory: pytest.TempPathFactory) -> AlsaFiles:
    return alsa_devices(tmp_path_factory.getbasetemp() / "alsa")


def noise(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-20000, 20000, n).astype(np.int16)


# ------------------------------------------------------------------ PortAudio / ALSA


def test_list_devices_sees_file_pcms(alsa: AlsaFiles) -> None:
    found = {d.name: d for d in list_devices()}
    assert {"kiosk_mic", "kiosk_mic48", "kiosk_spk", "kiosk_spk48"} <= set(found)
    assert found["kiosk_mic48"].max_input_channels >= 2
    assert found["kiosk_mic"].default_rate > 0
    assert find_device(list(found.values()), "spk4", "output") == found["kiosk_spk48"]
    assert find_device(list(found.values()), "kiosk_mic", "input") == found["kiosk_mic"]


def test_capture_reads_the_infile_exactly(alsa: AlsaFiles) -> None:
    signal = noise(3200)
    alsa.write_input("kiosk_mic", signal)
    stream = open_stream("kiosk_mic", "input", 16000, 10)
    try:
        assert (stream.rate, stream.channels) == (16000, 1)
        got = np.concatenate([stream.read(160) for _ in range(20)])
    finally:
        stream.close()
    assert np.array_equal(got, signal)


def test_playback_writes_the_outfile_exactly(alsa: AlsaFiles) -> None:
    signal = noise(4800, seed=2)
    stream = open_stream("kiosk_spk", "output", 24000, 10)
    try:
        for i in range(0, len(signal), 240):
            stream.write(signal[i : i + 240])
    finally:
        stream.close()
    assert np.array_equal(alsa.read_output("kiosk_spk")[: len(signal)], signal)


def test_stereo_capture_at_48k(alsa: AlsaFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "choose_channels", lambda max_channels: 2)
    signal = noise(9600)
    alsa.write_input("kiosk_mic48", signal)
    stream = open_stream("kiosk_mic48", "input", 48000, 10)
    try:
        assert (stream.rate, stream.channels) == (48000, 2)
        got = np.concatenate([stream.read(480) for _ in range(10)])
    finally:
        stream.close()
    assert np.array_equal(got, signal)


def test_channel_choice() -> None:
    assert [devices.choose_channels(n) for n in (1, 2, 4, 128)] == [1, 2, 1, 1]


def test_unknown_device_is_a_named_error(alsa: AlsaFiles) -> None:
    with pytest.raises(DeviceError, match="no_such_mic"):
        open_stream("no_such_mic", "input", 16000, 10)


def test_missing_infile_fails_to_open(alsa: AlsaFiles) -> None:
    alsa.infile("kiosk_mic_gone").unlink(missing_ok=True)
    with pytest.raises(DeviceError, match="kiosk_mic_gone"):
        open_stream("kiosk_mic_gone", "input", 16000, 10)


# ------------------------------------------------------------------ wav: devices


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


def test_wav_source_plays_once_then_silence(tmp_path: Path) -> None:
    signal = noise(1000)
    write_wav(tmp_path / "in.wav", signal, 22050, 2)
    src = open_stream(f"wav:{tmp_path / 'in.wav'}", "input", 0, 10)
    assert (src.rate, src.channels, src.clocked) == (22050, 2, False)
    got = np.concatenate([src.read(300), src.read(300)])
    assert np.array_equal(got[:1000], signal)
    assert not got[1000:].any()


def test_wav_source_rejects_missing_and_8bit(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="cannot read"):
        open_stream(f"wav:{tmp_path / 'nope.wav'}", "input", 0, 10)
    with wave.open(str(tmp_path / "u8.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80" * 10)
    with pytest.raises(DeviceError, match="16-bit"):
        open_stream(f"wav:{tmp_path / 'u8.wav'}", "input", 0, 10)


def test_wav_sink_header_is_valid_after_every_write(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    sink = wavio.open_wav(str(path), "output", 0)
    assert sink.rate == wavio.WAV_OUTPUT_RATE
    written = []
    for i in range(3):
        chunk = noise(160, seed=i)
        sink.write(chunk)
        written.append(chunk)
        with wave.open(str(path), "rb") as w:  # read while still open for writing
            assert w.getnframes() == 160 * (i + 1)
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        assert np.array_equal(data, np.concatenate(written))
    sink.close()


# ------------------------------------------------------------------ pacing (pure)


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def run_pacer(mode: Any, io_cost: float, periods: int) -> tuple[Pacer, FakeTime]:
    ft = FakeTime()
    pacer = Pacer(16000, 160, mode, clock=ft.clock, sleep=ft.sleep)
    for _ in range(periods):
        ft.now += io_cost
        pacer.io_done(160, io_cost)
    return pacer, ft


def test_pacer_detects_a_clockless_device_and_paces_it() -> None:
    pacer, ft = run_pacer("auto", 0.0, 200)
    assert pacer.paced is True
    assert ft.now - 100.0 == pytest.approx(2.0, abs=0.011)


def test_pacer_leaves_a_blocking_device_alone() -> None:
    pacer, ft = run_pacer("auto", 0.010, 200)
    assert pacer.paced is False
    assert ft.sleeps == []


def test_pacer_explicit_modes() -> None:
    _, ft = run_pacer("device", 0.0, 50)
    assert ft.sleeps == []
    _, ft = run_pacer("clock", 0.0, 50)
    assert ft.now - 100.0 == pytest.approx(0.5)


def test_pacer_reanchors_after_a_stall() -> None:
    ft = FakeTime()
    pacer = Pacer(16000, 160, "clock", clock=ft.clock, sleep=ft.sleep)
    pacer.io_done(160, 0.0)
    ft.now += 5.0  # stalled: no burst of catch-up afterwards
    pacer.io_done(160, 0.0)
    ft.sleeps.clear()
    pacer.io_done(160, 0.0)
    assert ft.sleeps and ft.sleeps[0] == pytest.approx(0.01)


# ------------------------------------------------------------------ device threads


class FakeStream:
    clocked = False

    def __init__(self, fail_after: int = 10**9, exc: BaseException | None = None) -> None:
        self.name, self.rate, self.channels = "fake", 16000, 1
        self.reads = 0
        self.writes: list[np.ndarray] = []
        self.fail_after = fail_after
        self.exc = exc or OSError("device vanished")
        self.closed = False

    def read(self, frames: int) -> np.ndarray:
        self.reads += 1
        if self.reads > self.fail_after:
            raise self.exc
        return np.full(frames, self.reads, dtype=np.int16)

    def write(self, samples: np.ndarray) -> None:
        if len(self.writes) >= self.fail_after:
            raise self.exc
        self.writes.append(samples)

    def close(self) -> None:
        self.closed = True


async def run_thread(kind: type, stream: FakeStream, **kw: Any) -> tuple[list[Any], list[Any]]:
    events: list[Any] = []
    data: list[Any] = []
    done = trio.Event()

    def on_event(ev: Any) -> None:
        events.append(ev)
        if isinstance(ev, DeviceFailed):
            done.set()

    extra = {"on_data": lambda *a: data.append(a)} if kind is CaptureThread else {"source": kw.pop("source")}
    thread = kind("fake", 16000, 10, trio.lowlevel.current_trio_token(), on_event, opener=lambda *a: stream, **extra)
    thread.start()
    with trio.fail_after(5):
        await done.wait()
    assert await trio.to_thread.run_sync(thread.join)
    return events, data


async def test_capture_thread_reports_data_then_the_read_error() -> None:
    stream = FakeStream(fail_after=5)
    events, data = await run_thread(CaptureThread, stream)
    assert isinstance(events[0], DeviceOpened) and isinstance(events[1], DeviceFailed)
    assert "device vanished" in events[1].message
    assert [int(d[0][0]) for d in data] == [1, 2, 3, 4, 5]
    assert stream.closed


class BuggySource:
    def pull(self, frames: int, rate: int, channels: int) -> np.ndarray | None:
        raise ZeroDivisionError("oops")

    def wait(self, stop: threading.Event) -> None:
        pass

    def wake(self) -> None:
        pass


async def test_a_bug_in_the_thread_is_reported_not_lost() -> None:
    events, _ = await run_thread(PlaybackThread, FakeStream(), source=BuggySource())
    assert isinstance(events[-1], DeviceFailed) and "ZeroDivisionError" in events[-1].message


class PausableStream(FakeStream):
    """Records pause/resume calls in order with the writes."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []

    def write(self, samples: np.ndarray) -> None:
        super().write(samples)
        self.log.append("write")

    def pause(self) -> None:
        self.log.append("pause")

    def resume(self) -> None:
        self.log.append("resume")


async def test_an_idle_speaker_pauses_the_device_and_writes_nothing_until_audio_comes() -> None:
    """A Speaker with nothing queued: the thread pauses the stream and sleeps (no writes,
    no periods); a push wakes it: resume, the reply (after the jitter target), then the
    silence tail, and it pauses again. Stopping wakes a paused thread at once."""
    from kioskd.audio.jitter import JitterBuffer
    from kioskd.audio.speaker import DEVICE_LATENCY_PERIODS, Speaker

    speaker = Speaker(lambda rate: JitterBuffer(rate, min_ms=20, start_ms=20), 16000)
    stream = PausableStream()
    events: list[Any] = []
    thread = PlaybackThread("fake", 16000, 10, trio.lowlevel.current_trio_token(), events.append,
                            opener=lambda *a: stream, source=speaker, pacing="clock")
    thread.start()
    with trio.fail_after(5):
        while thread.pauses < 1:
            await trio.sleep(0.01)
        await trio.sleep(0.1)
        assert stream.log == ["pause"] and thread.pauses == 1  # idle from the start: nothing written
        speaker.push(1, np.full(800, 1000, np.int16))  # 50 ms
        while thread.pauses < 2:
            await trio.sleep(0.01)
        await trio.sleep(0.1)
        thread.stop()
        assert await trio.to_thread.run_sync(thread.join)  # woken at once, not left waiting
    assert stream.log[:2] == ["pause", "resume"] and stream.log[-1] == "pause"
    played = np.concatenate(stream.writes)
    assert np.count_nonzero(played == 1000) == 800
    # after the reply: silence until the device holds only silence and the reply has left it
    after = len(played) - int(np.flatnonzero(played == 1000)[-1]) - 1
    assert DEVICE_LATENCY_PERIODS * 160 <= after <= (DEVICE_LATENCY_PERIODS + 2) * 160
    assert not speaker.speaking and isinstance(events[0], DeviceOpened) and len(events) == 1


async def test_open_failure_is_reported() -> None:
    events: list[Any] = []
    done = trio.Event()

    def opener(*a: Any) -> Any:
        raise DeviceError("no input device matches 'x'")

    def on_event(ev: Any) -> None:
        events.append(ev)
        done.set()

    t = CaptureThread("x", 0, 10, trio.lowlevel.current_trio_token(), on_event, opener=opener, on_data=print)
    t.start()
    with trio.fail_after(5):
        await done.wait()
    assert events == [DeviceFailed("input", "x", "no input device matches 'x'")]
    assert devices.DeviceError is DeviceError


# ------------------------------------------------------------------ kioskd devices / test-mic / test-speaker


def test_devices_command_lists_both_directions(alsa: AlsaFiles, capsys: pytest.CaptureFixture[str]) -> None:
    from kioskd.hardware.checks import devices_main

    assert devices_main([]) == 0
    out = capsys.readouterr().out
    assert "input devices:" in out and "output devices:" in out and "kiosk_mic" in out


def test_speaker_command_plays_a_faded_tone(alsa: AlsaFiles) -> None:
    from kioskd.hardware.checks import test_speaker_main

    assert test_speaker_main(["--device", "kiosk_spk", "--rate", "16000"]) == 0
    out = alsa.read_output("kiosk_spk")
    assert len(out) >= 16000 and abs(int(out[0])) < 50 and np.abs(out).max() > 9000


def test_mic_command_shows_a_level(alsa: AlsaFiles, capsys: pytest.CaptureFixture[str]) -> None:
    from kioskd.hardware.checks import test_mic_main

    alsa.write_input("kiosk_mic", np.full(16000, 3000, dtype=np.int16))
    assert test_mic_main(["--device", "kiosk_mic", "--seconds", "0.3"]) == 0
    assert "dBFS" in capsys.readouterr().out


def test_wav_output_is_a_fresh_private_file_not_the_old_one(tmp_path: Path) -> None:
    """An old recording with a loose mode (or an fd someone holds on it) must not get the new audio."""
    path = tmp_path / "out.wav"
    path.write_bytes(b"old recording")
    path.chmod(0o644)
    held = open(path, "rb")  # noqa: SIM115 - a reader that opened the old file
    try:
        sink = wavio.open_wav(str(path), "output", 16000)
        sink.write(np.ones(160, dtype=np.int16))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert held.read() == b"old recording"  # the held file is not the one being written
        assert path.read_bytes()[:4] == b"RIFF"
        sink.close()
    finally:
        held.close()


def test_the_level_gate_decides_on_each_periods_rms_and_a_peak_alone_does_not_open_it() -> None:
    from kioskd.audio.device_threads import GATE_MARGIN_DB, _loud

    period, dbfs = 160, -40.0
    level = 32768 * 10 ** ((dbfs - GATE_MARGIN_DB) / 20)  # the RMS the gate opens at
    quiet = np.zeros(10 * period, dtype=np.int16)
    assert not _loud(quiet, period, dbfs)
    click = quiet.copy()
    click[555] = -int(3 * level)  # a peak well above the level, the RMS of its period under it
    assert not _loud(click, period, dbfs)
    t = np.arange(period * 10)
    for scale, loud in ((1.05, True), (0.95, False)):  # a sine's RMS is its amplitude / √2
        tone = np.zeros(10 * period, dtype=np.int16)
        tone[3 * period : 4 * period] = np.round(scale * level * np.sqrt(2) * np.sin(t[:period] * 0.3))
        assert _loud(tone, period, dbfs) is loud, scale
    assert not _loud(np.zeros(period - 1, dtype=np.int16), period, dbfs)  # not a whole period

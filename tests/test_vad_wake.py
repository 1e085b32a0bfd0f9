"""VAD wake: real (espeak-ng) speech wakes early enough for the pre-roll; noise, clicks, coughs and playback do not."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from kioskd.audio.vad_wake import VadWakeTrigger, WakeDetector, frame_dbfs
from kioskd.config import AudioConfig, VadWakeConfig
from kioskd.state import Command, KioskState, StatusBoard

RATE = 16000
FRAME = 160
FRAME_S = 0.01
LEAD_SILENCE_S = 1.0
ONSET_DBFS = -60.0  # a frame this loud is where the speech begins
PREROLL_S = AudioConfig().preroll_ms / 1000.0
KEEP_BEFORE_WAKE_S = 0.2  # the first 200 ms of speech must be inside the pre-roll
# min_speech_ms that fits a 500 ms pre-roll with 200 ms to spare (the default, 300, does not)
FAST = VadWakeConfig(min_speech_ms=200)
DEFAULT = VadWakeConfig()
SEED = 1234

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox"
)


# --------------------------------------------------------------------------- audio fixtures


def _speak(tmp: Path, text: str) -> np.ndarray:
    raw, wav16 = tmp / "raw.wav", tmp / "speech16k.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(
        ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav16)], check=True, capture_output=True
    )
    with wave.open(str(wav16)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).copy()


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """'hello, where is the museum shop' at 16 kHz, trimmed to whole frames."""
    audio = _speak(tmp_path_factory.mktemp("espeak"), "hello, where is the museum shop")
    return audio[: len(audio) // FRAME * FRAME]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


def scaled(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale float noise to an RMS of ``dbfs``."""
    x = x / np.sqrt(np.mean(x * x))
    return np.clip(x * 32768 * 10 ** (dbfs / 20), -32768, 32767).astype(np.int16)


def white(seconds: float, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    return scaled(rng.standard_normal(int(seconds * RATE)), dbfs)


def pink(seconds: float, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    return scaled(np.fft.irfft(spectrum / np.sqrt(f), n), dbfs)


def frames(audio: np.ndarray) -> list[np.ndarray]:
    audio = audio[: len(audio) // FRAME * FRAME]
    return [audio[i : i + FRAME] for i in range(0, len(audio), FRAME)]


def run(detector: WakeDetector, audio: np.ndarray, start: float = 0.0) -> list[float]:
    """Feed ``audio`` frame by frame; ``now`` is each frame's end time. Returns wake times."""
    wakes = []
    for i, frame in enumerate(frames(audio)):
        now = start + (i + 1) * FRAME_S
        if detector.feed(frame, now):
            wakes.append(now)
    return wakes


def onset(audio: np.ndarray) -> float:
    """Start time of the first frame loud enough to be speech."""
    for i, frame in enumerate(frames(audio)):
        if frame_dbfs(frame) > ONSET_DBFS:
            return i * FRAME_S
    raise AssertionError("no speech in the clip")


# --------------------------------------------------------------------------- speech wakes


def test_speech_wakes_in_time_for_the_preroll(speech: np.ndarray) -> None:
    audio = np.concatenate([silence(LEAD_SILENCE_S), speech, silence(0.5)])
    wakes = run(WakeDetector(FAST), audio)
    assert len(wakes) >= 1
    latency = wakes[0] - onset(audio)
    assert 0 < latency < PREROLL_S - KEEP_BEFORE_WAKE_S


def test_default_config_wakes_right_after_min_speech(speech: np.ndarray) -> None:
    audio = np.concatenate([silence(LEAD_SILENCE_S), speech, silence(0.5)])
    wakes = run(WakeDetector(DEFAULT), audio)
    assert wakes
    latency = wakes[0] - onset(audio)
    # a soft attack (breath, "h") may take a few frames to count: 60 ms slack
    assert DEFAULT.min_speech_ms / 1000 <= latency < DEFAULT.min_speech_ms / 1000 + 0.06


def test_speech_in_background_noise_wakes(speech: np.ndarray) -> None:
    rng = np.random.default_rng(SEED)
    audio = np.concatenate([silence(LEAD_SILENCE_S), speech, silence(0.5)]).astype(np.int32)
    noisy = audio + pink(len(audio) / RATE, frame_dbfs(speech) - 15.0, rng)  # 15 dB SNR
    assert run(WakeDetector(DEFAULT), np.clip(noisy, -32768, 32767).astype(np.int16))


def test_wakes_once_per_min_speech(speech: np.ndarray) -> None:
    wakes = run(WakeDetector(DEFAULT), np.concatenate([silence(LEAD_SILENCE_S), speech]))
    # after a wake the count starts again: never two wakes closer than min_speech_ms
    assert wakes and all(b - a >= DEFAULT.min_speech_ms / 1000 - 1e-9 for a, b in itertools.pairwise(wakes))


def test_quiet_speech_below_the_floor_does_not_wake(speech: np.ndarray) -> None:
    quiet = (speech.astype(np.float64) * 10 ** (-45 / 20)).astype(np.int16)  # ≈ -65 dBFS peaks
    assert run(WakeDetector(DEFAULT), np.concatenate([silence(LEAD_SILENCE_S), quiet])) == []


# --------------------------------------------------------------------------- no wake on noise


@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("level", [DEFAULT.energy_floor_dbfs - 10, -20.0, -6.0])
def test_noise_bursts_do_not_wake(kind: str, level: float) -> None:
    rng = np.random.default_rng(SEED)
    make = white if kind == "white" else pink
    bursts = [np.concatenate([silence(0.3), make(1.5, level, rng)]) for _ in range(3)]
    detector = WakeDetector(DEFAULT)
    assert run(detector, np.concatenate(bursts)) == []


def test_click_train_does_not_wake() -> None:
    click_period = 0.1
    click = np.zeros(int(click_period * RATE), np.int16)
    click[:8] = [32000, -32000, 24000, -24000, 16000, -16000, 8000, -8000]
    audio = np.concatenate([silence(0.3)] + [click] * 20)
    assert run(WakeDetector(DEFAULT), audio) == []


def test_cough_like_burst_does_not_wake(speech: np.ndarray) -> None:
    rng = np.random.default_rng(SEED)
    n = int(0.15 * RATE)
    envelope = np.exp(-np.linspace(0, 5, n)) * np.minimum(1, np.linspace(0, 20, n))
    cough = scaled(np.convolve(rng.standard_normal(n), np.ones(8) / 8, "same") * envelope, -12.0)
    assert run(WakeDetector(DEFAULT), np.concatenate([silence(0.5), cough, silence(0.5)])) == []
    # even 150 ms of the loudest real speech is too short
    start = int(np.argmax(np.abs(speech))) // FRAME * FRAME
    snippet = speech[max(0, start - 1200) : max(0, start - 1200) + n]
    assert run(WakeDetector(DEFAULT), np.concatenate([silence(0.5), snippet, silence(0.5)])) == []


# --------------------------------------------------------------------------- own playback


def test_no_wake_while_playback_is_active(speech: np.ndarray) -> None:
    detector = WakeDetector(DEFAULT)
    detector.set_playback(True, 0.0)
    assert run(detector, np.concatenate([silence(0.2), speech, speech])) == []


def test_no_wake_within_the_playback_tail_then_wakes_after(speech: np.ndarray) -> None:
    config = VadWakeConfig(playback_tail_ms=4000)
    detector = WakeDetector(config)
    detector.set_playback(True, 0.0)
    detector.set_playback(False, 0.0)  # tail until 4.0 s
    assert len(speech) / RATE < 3.5
    assert run(detector, np.concatenate([silence(0.2), speech])) == []
    later = 5.0
    assert run(detector, np.concatenate([silence(0.2), speech]), start=later)  # tail over: wakes


def test_speech_straddling_the_tail_only_counts_after_it(speech: np.ndarray) -> None:
    detector = WakeDetector(DEFAULT)
    audio = np.concatenate([silence(LEAD_SILENCE_S), speech])
    speech_at = onset(audio)
    tail_end = speech_at + 0.2 + DEFAULT.playback_tail_ms / 1000
    detector.set_playback(True, 0.0)
    detector.set_playback(False, speech_at + 0.2)
    wakes = run(detector, audio)
    assert wakes and wakes[0] >= tail_end + DEFAULT.min_speech_ms / 1000 - 1e-9


def test_suppress_until_and_reset(speech: np.ndarray) -> None:
    detector = WakeDetector(DEFAULT)
    detector.suppress_until(100.0)
    detector.suppress_until(1.0)  # never shortens
    assert run(detector, np.concatenate([silence(0.2), speech])) == []
    # reset forgets partial speech: 250 ms of speech, reset, 250 ms more → no wake
    detector = WakeDetector(DEFAULT)
    audio = np.concatenate([silence(LEAD_SILENCE_S), speech])
    start = int(onset(audio) * RATE)
    assert run(detector, audio[: start + 4000]) == []
    detector.reset()
    assert run(detector, audio[start + 4000 : start + 8000], start=(start + 4000) / RATE) == []


def test_rejects_wrong_frames() -> None:
    detector = WakeDetector(DEFAULT)
    with pytest.raises(ValueError):
        detector.feed(np.zeros(320, np.int16), 0.0)
    with pytest.raises(ValueError):
        detector.feed(np.zeros(160, np.float32), 0.0)
    with pytest.raises(ValueError):
        WakeDetector(DEFAULT, rate=44100)


# --------------------------------------------------------------------------- adapter


def _feed(trigger: VadWakeTrigger, audio: np.ndarray, start: float = 0.0) -> None:
    for i, frame in enumerate(frames(audio)):
        trigger.on_frame(frame, start + (i + 1) * FRAME_S)


def test_trigger_sends_start_when_idle(speech: np.ndarray) -> None:
    sent: list[Command] = []
    board = StatusBoard()
    trigger = VadWakeTrigger(DEFAULT, sent.append, board)
    _feed(trigger, np.concatenate([silence(LEAD_SILENCE_S), speech]))
    assert sent and set(sent) == {Command.START}


def test_trigger_is_quiet_outside_idle_and_when_disabled(speech: np.ndarray) -> None:
    sent: list[Command] = []
    board = StatusBoard()
    board.update(state=KioskState.CONVERSATION)
    trigger = VadWakeTrigger(DEFAULT, sent.append, board)
    _feed(trigger, np.concatenate([silence(LEAD_SILENCE_S), speech]))
    assert sent == []
    board.update(state=KioskState.IDLE)
    trigger.enabled = False
    _feed(trigger, np.concatenate([silence(LEAD_SILENCE_S), speech]), start=10.0)
    assert sent == []
    trigger.enabled = True
    _feed(trigger, np.concatenate([silence(LEAD_SILENCE_S), speech]), start=20.0)
    assert sent  # the same speech wakes once idle and enabled


def test_trigger_playback_hook_uses_the_frame_clock(speech: np.ndarray) -> None:
    sent: list[Command] = []
    trigger = VadWakeTrigger(VadWakeConfig(playback_tail_ms=5000), sent.append)
    trigger.playback_active(True)
    _feed(trigger, np.concatenate([silence(0.2), speech]), start=50.0)
    trigger.playback_active(False)  # tail: 5 s from the next frame (t ≈ 60)
    _feed(trigger, np.concatenate([silence(0.2), speech]), start=60.0)
    assert sent == []
    _feed(trigger, np.concatenate([silence(0.2), speech]), start=70.0)
    assert sent and set(sent) == {Command.START}


def test_trigger_asks_the_speaker_at_every_frame(speech: np.ndarray) -> None:
    """Any playback (a cue, the agent's last words) silences the wake, then the tail does."""
    sent: list[Command] = []
    audible = [True]
    trigger = VadWakeTrigger(VadWakeConfig(playback_tail_ms=500), sent.append, speaking=lambda: audible[0])
    _feed(trigger, np.concatenate([silence(0.2), speech]), start=50.0)
    assert sent == []  # the speaker was audible throughout
    audible[0] = False  # the tail starts at the next frame (t = 60.01): no wake before 60.51
    _feed(trigger, np.concatenate([silence(0.2), speech[: int(0.3 * RATE)]]), start=60.0)
    assert sent == []
    _feed(trigger, np.concatenate([silence(0.2), speech]), start=70.0)
    assert sent and set(sent) == {Command.START}

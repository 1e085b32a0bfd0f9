"""Tests for kioskd.audio.echo.EchoCanceller on espeak-ng speech through a simulated room."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from dataclasses import dataclass

import numpy as np
import pytest

from kioskd.audio import echo as echo_module
from kioskd.audio.echo import MAX_FAR_BACKLOG_FRAMES, EchoCanceller
from kioskd.audio.formats import Resampler, dbfs

RATE = 16000
FRAME = 160
ECHO_DELAY_S = 0.030  # speaker → microphone
TAIL_S = 0.060  # decaying reverberant tail after the direct path
TAIL_DECAY_S = 0.012  # its time constant
ECHO_GAIN = 0.5  # RMS gain of the echo path
OUTPUT_LEAD_FRAMES = 4  # far frames are handed to the device 40 ms before they play…
OUTPUT_BURST_FRAMES = 4  # …in bursts of 40 ms
MIN_ERLE_DB = 25.0
USER_TOLERANCE_DB = 3.0
DOUBLE_TALK_MAX_USER_LOSS_DB = 10.0
DOUBLE_TALK_MIN_CORRELATION = 0.5
MAX_PROCESSING_DELAY = 320  # samples (20 ms) searched for the canceller's own delay

AGENT_TEXT = (
    "Hello and welcome to the museum. The next guided tour starts at three o'clock "
    "in the main hall. Please ask me anything about the exhibits."
)
USER_TEXT = "What time does the cafe close today?"


def speak(text: str, voice: str, pitch: int) -> np.ndarray:
    """espeak-ng speech resampled to 16 kHz int16."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = subprocess.run(
        ["espeak-ng", "--stdout", "-v", voice, "-p", str(pitch), "-s", "170", text],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    r = Resampler(rate, RATE)
    return np.concatenate([r.process(samples), r.process(np.zeros(0, np.int16), last=True)])


def room_impulse_response(seed: int = 7) -> np.ndarray:
    """30 ms delay, a direct path, then an exponentially decaying random tail."""
    rng = np.random.default_rng(seed)
    delay = int(ECHO_DELAY_S * RATE)
    k = np.arange(int(TAIL_S * RATE))
    ir = np.zeros(delay + len(k))
    ir[delay:] = rng.standard_normal(len(k)) * np.exp(-k / (TAIL_DECAY_S * RATE))
    ir[delay] = 1.0
    return ir * ECHO_GAIN / np.sqrt(np.sum(ir**2))


def s(a: float, b: float) -> slice:
    return slice(int(a * RATE), int(b * RATE))


@dataclass
class Scene:
    """Speaker signal, the echo it makes, the user's speech and the microphone mix."""

    far: np.ndarray
    echo: np.ndarray
    user: np.ndarray
    mic: np.ndarray


def make_scene() -> Scene:
    """8 s: agent 0–4 s (echo only), user 4.1–5.9 s (alone), agent 6–8 s with the user
    talking over it 6.5–7.5 s (double talk)."""
    agent = speak(AGENT_TEXT, "en-us", 50)
    user_speech = speak(USER_TEXT, "en+f3", 80)
    assert len(agent) >= 6 * RATE and len(user_speech) >= 1.8 * RATE
    n = 8 * RATE
    far = np.zeros(n)
    far[s(0, 4)] = agent[s(0, 4)]
    far[s(6, 8)] = agent[s(4, 6)]
    user = np.zeros(n)
    user[s(4.1, 5.9)] = user_speech[s(0, 1.8)]
    user[s(6.5, 7.5)] = user_speech[s(0.2, 1.2)]
    echo = np.convolve(far, room_impulse_response())[:n]
    mic = np.clip(np.round(echo + user), -32768, 32767).astype(np.int16)
    return Scene(far.astype(np.int16), echo, user, mic)


@pytest.fixture(scope="module")
def scene() -> Scene:
    """The test scene (built once per module)."""
    return make_scene()


def run(ec: EchoCanceller, scene: Scene) -> np.ndarray:
    """Feed far frames ahead in bursts (like a device writer) and each mic frame in turn."""
    frames = len(scene.mic) // FRAME
    pushed = 0
    out = []
    for j in range(frames):
        while pushed < min(frames, j + OUTPUT_LEAD_FRAMES):
            for k in range(pushed, min(frames, pushed + OUTPUT_BURST_FRAMES)):
                ec.far(scene.far[k * FRAME : (k + 1) * FRAME])
            pushed = min(frames, pushed + OUTPUT_BURST_FRAMES)
        out.append(ec.near(scene.mic[j * FRAME : (j + 1) * FRAME]))
    return np.concatenate(out)


def erle(scene: Scene, out: np.ndarray, seg: slice) -> float:
    """Echo return loss enhancement (dB) on an echo-only segment."""
    return dbfs(np.round(scene.echo[seg]).astype(np.int16)) - dbfs(out[seg])


@pytest.fixture(scope="module")
def cancelled(scene: Scene) -> np.ndarray:
    if not echo_module.AVAILABLE:
        pytest.fail("pywebrtc-audio is a dependency of kioskd but cannot be imported")
    return run(EchoCanceller(RATE), scene)


def test_scene_has_loud_echo(scene: Scene) -> None:
    # Sanity of the fixture itself: the echo is well above the floor the test can measure.
    assert dbfs(np.round(scene.echo[s(1.5, 4)]).astype(np.int16)) > -35.0
    assert not np.any(scene.user[s(0, 4)]) and not np.any(scene.far[s(4.0, 6)])


def test_echo_reduced_by_at_least_25_db_after_convergence(
    scene: Scene, cancelled: np.ndarray
) -> None:
    assert erle(scene, cancelled, s(1.5, 4.0)) >= MIN_ERLE_DB
    assert erle(scene, cancelled, s(6.0, 6.5)) >= MIN_ERLE_DB  # still converged later


def aligned(out: np.ndarray, ref: np.ndarray, seg: slice) -> tuple[float, float]:
    """(correlation, gain) of ``out`` against ``ref`` over ``seg``, after
    removing the canceller's processing delay (AEC3's filter bank: found by search)."""
    r = ref[seg]
    lag = max(
        range(MAX_PROCESSING_DELAY),
        key=lambda k: abs(float(np.dot(out[seg.start + k : seg.stop + k], r))),
    )
    o = out[seg.start + lag : seg.stop + lag].astype(float)
    return float(np.corrcoef(o, r)[0, 1]), float(np.dot(o, r) / np.dot(r, r))


def test_user_speech_passes_unchanged_in_level(scene: Scene, cancelled: np.ndarray) -> None:
    seg = s(4.2, 5.9)  # after the agent's echo tail has died away
    user_level = dbfs(np.round(scene.user[seg]).astype(np.int16))
    assert abs(dbfs(cancelled[seg]) - user_level) <= USER_TOLERANCE_DB
    corr, gain = aligned(cancelled, scene.user, seg)  # the user's waveform, not noise
    assert corr > 0.9
    assert abs(20 * np.log10(gain)) <= USER_TOLERANCE_DB


def test_double_talk_keeps_the_user(
    scene: Scene, cancelled: np.ndarray
) -> None:
    seg = s(6.5, 7.5)
    corr, gain = aligned(cancelled, scene.user, seg)
    # AEC3's suppressor ducks double talk somewhat, but the user must stay clearly there.
    assert gain > 10 ** (-DOUBLE_TALK_MAX_USER_LOSS_DB / 20)
    assert corr > DOUBLE_TALK_MIN_CORRELATION


def test_disabled_passes_through(scene: Scene) -> None:
    ec = EchoCanceller(RATE, enabled=False)
    assert not ec.active
    ec.far(scene.far[:FRAME])
    frame = scene.mic[RATE : RATE + FRAME]
    out = ec.near(frame)
    assert np.array_equal(out, frame) and out is not frame


def test_without_far_audio_the_user_passes(scene: Scene) -> None:
    ec = EchoCanceller(RATE)
    seg = s(4.0, 6.0)
    out = np.concatenate([ec.near(x) for x in scene.mic[seg].reshape(-1, FRAME)])
    level = dbfs(np.round(scene.user[seg]).astype(np.int16))
    assert abs(dbfs(out[RATE // 5 :]) - dbfs(scene.mic[seg][RATE // 5 :])) <= USER_TOLERANCE_DB
    assert level > -40.0
    assert ec.stats()["aec_far_missing"] == len(scene.mic[seg]) // FRAME


def test_far_queue_is_bounded() -> None:
    ec = EchoCanceller(RATE)
    for _ in range(MAX_FAR_BACKLOG_FRAMES + 7):
        ec.far(np.zeros(FRAME, np.int16))
    stats = ec.stats()
    assert stats["aec_far_queued"] == MAX_FAR_BACKLOG_FRAMES
    assert stats["aec_far_dropped"] == 7
    ec.reset()
    assert ec.stats()["aec_far_queued"] == 0


def test_rejects_wrong_frame_size() -> None:
    ec = EchoCanceller(RATE)
    with pytest.raises(ValueError, match="160 samples"):
        ec.near(np.zeros(320, np.int16))
    with pytest.raises(ValueError, match="160 samples"):
        ec.far(np.zeros(100, np.int16))

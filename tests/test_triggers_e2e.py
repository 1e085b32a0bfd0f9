"""Triggers end to end: the real daemon (``Kiosk``) on gpiozero mock pins, against the simulator.

The microphone is a ``wav:`` file (played once in real time, then silence); a frame
listener registered before the kiosk starts counts its frames, so the test knows when
each part of the file reaches the kiosk and can act (press the button) at that moment.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import webrtcvad
from gpiozero.pins.mock import MockFactory, MockPWMPin

from kiosk_harness import SPEECH_WAV, RunningKiosk, kiosk_config, read_wav, running_kiosk
from kioskd.audio.formats import AudioFormat
from kioskd.audio.vad_wake import frame_dbfs
from kioskd.hardware.button import HELD_SLACK
from kioskd.protocol.client_messages import UserAudioChunk
from kioskd.service.daemon import Kiosk
from kioskd.simulator import Conversation, Simulator, SimulatorConfig, open_simulator
from kioskd.state import KioskState

RATE = 16000
FRAME = 160  # 10 ms at 16 kHz: the engine's frame
FRAME_S = 0.01
BUTTON_PIN = 17
LED_PIN = 18
TIMEOUT = 30.0
#: Frames louder than this count as "sound" when locating speech in a clip.
ONSET_DBFS = -50.0
#: Audio in flight when a microphone switch happens (a chunk or two, plus the hand-off).
IN_FLIGHT_S = 0.15
#: The first part of an utterance that must reach the agent after a voice wake.
FIRST_WORDS_S = 0.2

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox"
)


# --------------------------------------------------------------------------- audio helpers


def write_wav(path: Path, audio: np.ndarray) -> Path:
    """Write int16 mono 16 kHz samples to ``path``."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(audio.astype(np.int16).tobytes())
    return path


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


def frame_aligned(audio: np.ndarray) -> np.ndarray:
    return audio[: len(audio) // FRAME * FRAME]


def onset_frame(audio: np.ndarray) -> int:
    """Index of the first 10 ms frame louder than ONSET_DBFS."""
    for k in range(len(audio) // FRAME):
        if frame_dbfs(audio[k * FRAME : (k + 1) * FRAME]) > ONSET_DBFS:
            return k
    raise AssertionError("no sound in the clip")


def espeak(tmp: Path, text: str) -> np.ndarray:
    """``text`` spoken by espeak-ng at 16 kHz, starting at its first audible frame."""
    raw, wav16 = tmp / "espeak-raw.wav", tmp / "espeak-16k.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(
        ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav16)], check=True, capture_output=True
    )
    audio, rate = read_wav(wav16)
    assert rate == RATE
    return frame_aligned(audio[onset_frame(audio) * FRAME :].copy())


def scaled(x: np.ndarray, dbfs: float) -> np.ndarray:
    x = x / np.sqrt(np.mean(x * x))
    return np.clip(x * 32768 * 10 ** (dbfs / 20), -32768, 32767).astype(np.int16)


def pink(seconds: float, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    return scaled(np.fft.irfft(spectrum / np.sqrt(f), n), dbfs)


def clicks(seconds: float, per_second: float, rng: np.random.Generator) -> np.ndarray:
    """A train of sharp clicks (a tapping finger, a relay): full-scale 2 ms decaying bursts."""
    out = np.zeros(int(seconds * RATE), np.float64)
    burst = rng.standard_normal(32) * np.exp(-np.arange(32) / 6.0)
    for start in np.arange(0.0, seconds, 1.0 / per_second):
        i = int(start * RATE)
        out[i : i + 32] += burst[: len(out) - i]
    clipped: np.ndarray = np.clip(out / np.abs(burst).max() * 30000, -32768, 32767).astype(np.int16)
    return clipped


def find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Index where ``needle`` starts inside ``haystack`` exactly, or -1."""
    first = np.flatnonzero(needle)[0]
    for start in np.flatnonzero(haystack == needle[first]) - first:
        if start >= 0 and np.array_equal(haystack[start : start + len(needle)], needle):
            return int(start)
    return -1


def audio_chunks(conv: Conversation) -> list[tuple[float, np.ndarray]]:
    """Every ``user_audio_chunk`` the simulator received: (time, int16 samples); pcm_16000 only."""
    assert conv.input_format == "pcm_16000"
    return [
        (t, np.frombuffer(m.user_audio_chunk, np.int16))
        for t, m in conv.messages
        if isinstance(m, UserAudioChunk)
    ]


# --------------------------------------------------------------------------- the kiosk


class MicWatch:
    """Frame listener: counts the microphone's frames, so file position ↔ Trio time is known."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, frame: np.ndarray, t: float) -> None:
        self.times.append(t)

    async def reach(self, seconds: float) -> float:
        """Wait until the file position ``seconds`` reached the kiosk; returns that frame's time."""
        k = round(seconds / FRAME_S)
        while len(self.times) <= k:
            await trio.sleep(FRAME_S / 2)
        return self.times[k]


@asynccontextmanager
async def kiosk_on_mock_pins(
    config: Any, *, setup: Callable[[Kiosk], None] | None = None
) -> AsyncIterator[tuple[RunningKiosk, MockFactory]]:
    """Run the real daemon on gpiozero mock (PWM) pins; ``setup`` sees the kiosk before it starts."""
    factory = MockFactory(pin_class=MockPWMPin)
    try:
        async with running_kiosk(config, pin_factory=factory, setup=setup) as running:
            yield running, factory
    finally:
        factory.close()


def press(factory: MockFactory) -> None:
    factory.pin(BUTTON_PIN).drive_low()  # pull-up: pressed pulls the pin to ground


def release(factory: MockFactory) -> None:
    factory.pin(BUTTON_PIN).drive_high()


async def click(factory: MockFactory, seconds: float = 0.15) -> None:
    press(factory)
    await trio.sleep(seconds)
    release(factory)


def button_config(sim: Simulator, tmp: Path, mic: Path, mode: str, **extra: dict[str, Any]) -> Any:
    return kiosk_config(
        sim,
        tmp,
        audio={"input": f"wav:{mic}"},
        trigger={"mode": "button"},
        button={"pin": BUTTON_PIN, "pull_up": True, "mode": mode, "long_press": LONG_PRESS, "bounce_ms": 20},
        leds={"kind": "pwm", "pin": LED_PIN},
        **extra,
    )


LONG_PRESS = 0.6


# --------------------------------------------------------------------------- button


async def test_toggle_press_starts_press_ends_long_press_ends(tmp_path: Path) -> None:
    speech, _ = read_wav(SPEECH_WAV)
    lead = 1.0
    mic = write_wav(tmp_path / "mic.wav", np.concatenate([silence(lead), speech]))
    speech_at = lead + onset_frame(speech) * FRAME_S
    watch = MicWatch()
    async with open_simulator(SimulatorConfig()) as sim:
        config = button_config(sim, tmp_path, mic, "toggle")
        with trio.fail_after(TIMEOUT):
            async with kiosk_on_mock_pins(config, setup=lambda k: k.audio.add_frame_listener(watch)) as (k, pins):
                await k.wait_state(KioskState.IDLE)
                assert k.kiosk.button.available and k.kiosk.leds.available
                # the visitor starts talking as they press; a toggle press acts at its release
                await watch.reach(speech_at)
                await click(pins, 0.3)
                conv = await sim.wait_for_conversation(0)
                await k.wait_state(KioskState.CONVERSATION)
                await sim.wait_for(lambda: bool(conv.turns))  # the agent heard the visitor and answered
                await click(pins)  # press again: ends
                await sim.wait_for(lambda: not conv.open)
                await k.wait_state(KioskState.IDLE)

                # ready again at once: the next press starts a new conversation
                await click(pins)
                conv2 = await sim.wait_for_conversation(1)
                await k.wait_state(KioskState.CONVERSATION)
                # a long press ends it while the button is still held; its release does nothing
                press(pins)
                pressed_at = trio.current_time()
                await sim.wait_for(lambda: not conv2.open)
                await k.wait_state(KioskState.IDLE)
                assert not pins.pin(BUTTON_PIN).state  # still held when it ended
                release(pins)
                await trio.sleep(LONG_PRESS)
                assert k.kiosk.board.status.state is KioskState.IDLE
                assert len(sim.conversations) == 2
    # the pre-roll covered the press: everything from 100 ms before the visitor's first
    # audible frame to the end reached the agent, sample for sample
    assert find(conv.audio_pcm, speech[(onset_frame(speech) - 10) * FRAME :]) >= 0
    assert conv.close_code == 1000 and conv2.close_code == 1000
    assert conv2.ended_at is not None and conv2.ended_at - pressed_at >= LONG_PRESS - HELD_SLACK


async def test_hold_is_push_to_talk(tmp_path: Path) -> None:
    speech, _ = read_wav(SPEECH_WAV)  # talk from 0.3 s to 0.8 s and from 1.2 s to 3.7 s
    mic = write_wav(tmp_path / "mic.wav", speech)
    watch = MicWatch()
    async with open_simulator(SimulatorConfig()) as sim:
        config = button_config(sim, tmp_path, mic, "hold")
        with trio.fail_after(TIMEOUT):
            async with kiosk_on_mock_pins(config, setup=lambda k: k.audio.add_frame_listener(watch)) as (k, pins):
                await k.wait_state(KioskState.IDLE)
                await watch.reach(0.3)
                press(pins)  # starts the conversation, microphone live
                conv = await sim.wait_for_conversation(0)
                await watch.reach(1.6)  # held well past long_press: push-to-talk does not end on it
                release(pins)
                released = trio.current_time()
                await watch.reach(2.7)  # the visitor keeps talking, but the button is up
                press(pins)
                pressed = trio.current_time()
                await watch.reach(3.5)
                release(pins)
                released2 = trio.current_time()
                await trio.sleep(0.5)
                assert conv.open and k.kiosk.board.status.state is KioskState.CONVERSATION
                await k.ctl("end")
                await sim.wait_for(lambda: not conv.open)
    chunks = audio_chunks(conv)
    held = [c for t, c in chunks if t < released]
    up = [c for t, c in chunks if released + IN_FLIGHT_S < t < pressed]
    held2 = [c for t, c in chunks if pressed + IN_FLIGHT_S < t < released2]
    # while held the agent got the visitor's voice ...
    assert max(int(np.abs(c).max()) for c in held) > 1000
    assert max(int(np.abs(c).max()) for c in held2) > 1000
    # ... while released it got silence, exactly, and kept getting it (the conversation stayed open)
    assert all(not c.any() for c in up)
    assert sum(len(c) for c in up) >= (pressed - released - 2 * IN_FLIGHT_S) * RATE * 0.8


# --------------------------------------------------------------------------- voice wake


def vad_config(sim: Simulator, tmp: Path, mic: Path) -> Any:
    return kiosk_config(sim, tmp, audio={"input": f"wav:{mic}"}, trigger={"mode": "vad"}, leds={"kind": "none"})


@pytest.fixture(scope="module")
def greeting(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return espeak(tmp_path_factory.mktemp("espeak"), "hello, where is the museum shop")


@needs_espeak
async def test_speech_wakes_and_the_first_words_reach_the_agent(tmp_path: Path, greeting: np.ndarray) -> None:
    lead = 1.0
    mic = write_wav(tmp_path / "mic.wav", np.concatenate([silence(lead), greeting, silence(0.5)]))
    watch = MicWatch()
    async with open_simulator(SimulatorConfig()) as sim:
        with trio.fail_after(TIMEOUT):
            async with kiosk_on_mock_pins(
                vad_config(sim, tmp_path, mic), setup=lambda k: k.audio.add_frame_listener(watch)
            ) as (k, _):
                conv = await sim.wait_for_conversation(0)
                await sim.wait_for(lambda: bool(conv.turns))
                await k.ctl("end")
                await sim.wait_for(lambda: not conv.open)
    spoke_at = watch.times[int(lead / FRAME_S)]
    assert conv.started_at > spoke_at  # woken by the speech, not before it
    assert "vad wake" in k.log.getvalue()
    first_words = greeting[: int(FIRST_WORDS_S * RATE)]
    assert find(conv.audio_pcm, first_words) >= 0


@needs_espeak
async def test_no_wake_on_noise_or_clicks_then_speech_wakes(tmp_path: Path, greeting: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    noise = np.concatenate([pink(1.5, -20.0, rng), clicks(1.5, 12.0, rng)])
    # the noise is loud and webrtcvad alone would take it for speech: the wake's filters must hold
    vad = webrtcvad.Vad(2)
    fooled = sum(vad.is_speech(noise[i : i + FRAME].tobytes(), RATE) for i in range(0, len(noise) - FRAME, FRAME))
    assert fooled * FRAME_S > 0.3
    lead = 0.5
    speech_at = lead + len(noise) / RATE + 0.5
    mic = write_wav(tmp_path / "mic.wav", np.concatenate([silence(lead), noise, silence(0.5), greeting]))
    watch = MicWatch()
    async with open_simulator(SimulatorConfig()) as sim:
        with trio.fail_after(TIMEOUT):
            async with kiosk_on_mock_pins(
                vad_config(sim, tmp_path, mic), setup=lambda k: k.audio.add_frame_listener(watch)
            ) as (k, _):
                conv = await sim.wait_for_conversation(0)
                await k.ctl("end")
                await sim.wait_for(lambda: not conv.open)
    assert len(sim.conversations) == 1
    assert conv.started_at > watch.times[int(speech_at / FRAME_S)]


@needs_espeak
async def test_no_wake_on_the_kiosks_own_playback(tmp_path: Path, greeting: np.ndarray) -> None:
    """The agent's voice coming back through the microphone (the speaker is playing) never wakes."""
    lead, gap = 1.0, 1.5
    echo = greeting  # what the speaker plays reaches the microphone
    visitor_at = lead + len(echo) / RATE + gap
    mic = write_wav(tmp_path / "mic.wav", np.concatenate([silence(lead), echo, silence(gap), greeting]))
    watch = MicWatch()
    speaker_ahead = 0.3  # the speaker starts a little before its sound reaches the microphone

    def play_along(frame: np.ndarray, t: float) -> None:
        if len(watch.times) == int((lead - speaker_ahead) / FRAME_S):
            fmt = AudioFormat.parse("pcm_16000")
            audio = np.concatenate([silence(speaker_ahead), echo])
            kiosks[0].audio.open_playback(fmt).push(1, audio.tobytes())

    kiosks: list[Kiosk] = []

    def setup(k: Kiosk) -> None:
        kiosks.append(k)
        k.audio.add_frame_listener(watch)
        k.audio.add_frame_listener(play_along)

    async with open_simulator(SimulatorConfig()) as sim:
        with trio.fail_after(TIMEOUT):
            async with kiosk_on_mock_pins(vad_config(sim, tmp_path, mic), setup=setup) as (k, _):
                conv = await sim.wait_for_conversation(0)
                await k.ctl("end")
                await sim.wait_for(lambda: not conv.open)
    assert len(sim.conversations) == 1
    assert conv.started_at > watch.times[int(visitor_at / FRAME_S)]  # the echo did not wake it; the visitor did


# --------------------------------------------------------------------------- ending


async def test_idle_timeout_ends_and_the_kiosk_is_ready_at_once(tmp_path: Path) -> None:
    idle = 1.0
    mic = write_wav(tmp_path / "mic.wav", silence(0.2))  # nobody speaks
    async with open_simulator(SimulatorConfig()) as sim:
        config = button_config(sim, tmp_path, mic, "toggle", conversation={"idle_timeout": idle})
        with trio.fail_after(TIMEOUT):
            async with kiosk_on_mock_pins(config) as (k, pins):
                await k.wait_state(KioskState.IDLE)
                await click(pins)
                conv = await sim.wait_for_conversation(0)
                await sim.wait_for(lambda: not conv.open)
                await k.wait_state(KioskState.IDLE)
                status = await k.ctl("status")
                await click(pins)  # at once
                conv2 = await sim.wait_for_conversation(1)
                await k.wait_state(KioskState.CONVERSATION)
                await k.ctl("end")
                await sim.wait_for(lambda: not conv2.open)
    assert conv.close_code == 1000
    assert conv.ended_at is not None and conv.ended_at - conv.started_at >= idle
    assert "no speech" in status["last_end"]


async def test_max_duration_ends_a_lively_conversation(tmp_path: Path) -> None:
    longest = 2.0
    speech, _ = read_wav(SPEECH_WAV)
    mic = write_wav(tmp_path / "mic.wav", speech)
    async with open_simulator(SimulatorConfig()) as sim:
        config = button_config(
            sim, tmp_path, mic, "toggle", conversation={"idle_timeout": 30.0, "max_duration": longest}
        )
        with trio.fail_after(TIMEOUT):
            async with kiosk_on_mock_pins(config) as (k, pins):
                await k.wait_state(KioskState.IDLE)
                await click(pins)
                conv = await sim.wait_for_conversation(0)
                await sim.wait_for(lambda: not conv.open)
                await k.wait_state(KioskState.IDLE)
                status = await k.ctl("status")
                await click(pins)
                await sim.wait_for_conversation(1)
                await k.wait_state(KioskState.CONVERSATION)
    assert conv.close_code == 1000
    # (the kiosk counts from before the WebSocket opened; the simulator from its accept)
    assert conv.ended_at is not None and conv.ended_at - conv.started_at >= longest - 0.2
    assert "maximum length" in status["last_end"]


async def test_agent_ends_and_the_kiosk_is_ready_at_once(tmp_path: Path) -> None:
    mic = write_wav(tmp_path / "mic.wav", silence(0.2))
    async with open_simulator(SimulatorConfig()) as sim:
        config = button_config(sim, tmp_path, mic, "toggle")
        with trio.fail_after(TIMEOUT):
            async with kiosk_on_mock_pins(config) as (k, pins):
                await k.wait_state(KioskState.IDLE)
                await click(pins)
                conv = await sim.wait_for_conversation(0)
                await k.wait_state(KioskState.CONVERSATION)
                sim.faults.close(1000, "goodbye")
                await k.wait_state(KioskState.IDLE)
                await click(pins)
                conv2 = await sim.wait_for_conversation(1)
                await k.wait_state(KioskState.CONVERSATION)
    assert conv.close_code == 1000
    assert sim.conversations == [conv, conv2]  # a close 1000 is not resumed

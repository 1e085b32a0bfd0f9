"""The audio path end to end: ALSA file PCMs → PortAudio → kioskd → simulator, and back.

A whole kiosk (``kiosk_harness``) runs against the simulator with its microphone and
speaker on ALSA ``type file`` PCMs (``alsa_pcm``), once per conversation format. The
microphone device runs at 16 kHz, so ``pcm_16000`` must reach the agent sample for
sample; the speaker runs at 48 kHz, so ``pcm_48000`` agent audio must reach the file
sample for sample. Every other format goes through a resampler (and μ-law) and must
match the ideal conversion closely once aligned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soxr
import trio

from alsa_pcm import PACING, AlsaFiles, alsa_devices
from kiosk_harness import kiosk_config, running_kiosk
from kioskd.audio.engine import AudioEngine
from kioskd.audio.formats import AudioFormat, decode, encode
from kioskd.simulator import SimulatorConfig, open_simulator
from kioskd.simulator.speech import synth_speech
from kioskd.state import Command, KioskState

FORMATS = ["pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000", "ulaw_8000"]
LIMIT = 20.0
"""Bound on one format's run (seconds)."""
MIC_RATE = 16000
"""The capture device's rate: no conversion before the conversation's format."""
SPEAKER_RATE = 48000
"""The playback device's rate (a typical USB/HDMI device)."""
LEAD_S = 0.3
"""Silence in the infile before the visitor speaks."""
SPEECH_S = 1.2
"""The visitor's utterance."""
TAIL_S = 6.0
"""Silence after it (a file PCM repeats stale data past its end: keep it out of the test)."""
REPLY_S = 1.0
"""The agent's reply."""
MIN_CORRELATION = 0.999
"""Normalised correlation required where a resampler sits in the path."""


@pytest.fixture(scope="session")
def alsa(tmp_path_factory: pytest.TempPathFactory) -> AlsaFiles:
    return alsa_devices(tmp_path_factory.getbasetemp() / "alsa")


def find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Index where ``needle`` starts inside ``haystack`` exactly, or -1."""
    first = int(np.flatnonzero(needle)[0])
    for start in np.flatnonzero(haystack == needle[first]) - first:
        if start >= 0 and np.array_equal(haystack[start : start + len(needle)], needle):
            return int(start)
    return -1


#: An agent that waits for the visitor (its first_message empty): these tests follow one reply
#: sample for sample, and a greeting would be cut by the visitor's first words.
NO_GREETING = ""


def aligned_correlation(got: np.ndarray, ref: np.ndarray) -> float:
    """Normalised correlation of ``ref`` with ``got`` at the best lag (FFT cross-correlation)."""
    g, r = got.astype(np.float64), ref.astype(np.float64)
    if len(g) < len(r):
        return 0.0
    n = 1 << (len(g) + len(r)).bit_length()
    xc = np.fft.irfft(np.fft.rfft(g, n) * np.conj(np.fft.rfft(r, n)), n)[: len(g) - len(r) + 1]
    lag = int(np.argmax(xc))
    window = g[lag : lag + len(r)]
    return float(window @ r / (np.linalg.norm(window) * np.linalg.norm(r)))


def through(fmt: AudioFormat, samples: np.ndarray) -> np.ndarray:
    """What ``samples`` become on the wire in ``fmt`` (μ-law quantisation), decoded."""
    return decode(encode(samples, fmt), fmt)


@pytest.mark.parametrize("name", FORMATS)
async def test_mic_and_agent_audio_cross_intact_in_every_format(alsa: AlsaFiles, tmp_path: Path, name: str) -> None:
    fmt = AudioFormat.parse(name)
    speech = synth_speech(SPEECH_S, MIC_RATE, seed=7)
    lead, tail = np.zeros(int(LEAD_S * MIC_RATE), np.int16), np.zeros(int(TAIL_S * MIC_RATE), np.int16)
    alsa.write_input("kiosk_mic", np.concatenate([lead, speech, tail]))
    sim_config = SimulatorConfig(
        input_format=name, output_format=name, end_of_speech_ms=300, reply_seconds=REPLY_S,
        tool_call=None, vad_score_ms=0, ping_interval=5.0, first_message=NO_GREETING,
    )  # fmt: skip
    async with open_simulator(sim_config) as sim:
        audio = {"input": "kiosk_mic", "input_rate": MIC_RATE, "output": "kiosk_spk", "output_rate": SPEAKER_RATE,
                 "pacing": PACING, "preroll_ms": 3000, "max_backlog_ms": 6000}
        config = kiosk_config(sim, tmp_path, audio=audio)
        with trio.fail_after(LIMIT):
            async with running_kiosk(config) as k:
                assert (await k.ctl("start"))["ok"] is True
                conv = await sim.wait_for_conversation()
                await k.wait_state(KioskState.CONVERSATION)
                await sim.wait_for(lambda: len(conv.turns) >= 1 and len(conv.audio_event_ids) > 0)
                while not k.kiosk.board.status.agent_speaking:
                    await trio.sleep(0.01)
                while k.kiosk.board.status.agent_speaking:
                    await trio.sleep(0.01)
                await trio.sleep(0.1)  # the resampler's flushed tail
                await k.ctl("end")
                await sim.wait_for(lambda: not conv.open)
    assert conv.input_format == conv.output_format == name
    assert conv.interruptions == []  # nothing of the reply was cut

    # microphone → agent
    heard = conv.audio_pcm
    if fmt.rate == MIC_RATE and fmt.encoding == "pcm":
        assert find(heard, speech) >= 0
    else:
        ideal = through(fmt, soxr.resample(speech, MIC_RATE, fmt.rate, "VHQ").astype(np.int16))
        assert aligned_correlation(heard, ideal) > MIN_CORRELATION

    # agent → speaker
    reply = through(fmt, synth_speech(REPLY_S, fmt.rate, seed=0))
    out = alsa.read_output("kiosk_spk")
    if fmt.rate == SPEAKER_RATE:
        assert find(out, reply) >= 0
    else:
        ideal = soxr.resample(reply, fmt.rate, SPEAKER_RATE, "VHQ").astype(np.int16)
        assert aligned_correlation(out, ideal) > MIN_CORRELATION


# ------------------------------------------------------------------ pre-roll

BACKEND_DELAY_S = 1.0
"""The signing backend answers this late: the conversation opens well after the trigger."""


async def test_first_syllable_reaches_the_agent_despite_a_slow_backend(alsa: AlsaFiles, tmp_path: Path) -> None:
    """The trigger fires on the first frame of speech; the agent still hears it from its first sample."""
    speech = synth_speech(SPEECH_S, MIC_RATE, seed=11)
    lead = np.zeros(int(0.6 * MIC_RATE), np.int16)
    alsa.write_input("kiosk_mic", np.concatenate([lead, speech, np.zeros(int(TAIL_S * MIC_RATE), np.int16)]))
    sim_config = SimulatorConfig(end_of_speech_ms=300, reply_seconds=0.3, tool_call=None, vad_score_ms=0,
                                 first_message=NO_GREETING)
    async with open_simulator(sim_config) as sim:
        sim.backend_faults.delay = BACKEND_DELAY_S
        audio = {"input": "kiosk_mic", "input_rate": MIC_RATE, "output": f"wav:{tmp_path / 'out.wav'}"}
        config = kiosk_config(sim, tmp_path, audio=audio)
        with trio.fail_after(LIMIT):
            async with running_kiosk(config) as k:
                triggered: list[float] = []

                def trigger_on_speech(frame: np.ndarray, t: float) -> None:
                    if not triggered and frame.any():
                        triggered.append(t)
                        k.kiosk.supervisor.command(Command.START)

                k.kiosk.audio.add_frame_listener(trigger_on_speech)
                conv = await sim.wait_for_conversation()
                opened = trio.current_time()
                await sim.wait_for(lambda: len(conv.turns) >= 1)
                await k.ctl("end")
                await sim.wait_for(lambda: not conv.open)
    assert opened - triggered[0] >= BACKEND_DELAY_S  # the backend really was slow
    assert sim.backend_requests  # and was asked
    start = find(conv.audio_pcm, speech)
    assert start > 0  # the whole utterance, after some pre-roll silence
    assert not conv.audio_pcm[:start].any()


# ------------------------------------------------------------------ vanished device


async def test_vanished_microphone_is_reported_survived_and_recovered(
    alsa: AlsaFiles, tmp_path: Path
) -> None:
    """``ctl status`` names the missing mic; conversations still open; the mic comes back by itself."""
    gone = "kiosk_mic_gone"
    alsa.infile(gone).unlink(missing_ok=True)
    speech = synth_speech(SPEECH_S, MIC_RATE, seed=5)
    sim_config = SimulatorConfig(end_of_speech_ms=300, reply_seconds=0.3, tool_call=None, vad_score_ms=0,
                                 first_message=NO_GREETING)
    try:
        async with open_simulator(sim_config) as sim:
            audio = {"input": gone, "input_rate": MIC_RATE, "output": f"wav:{tmp_path / 'out.wav'}"}
            config = kiosk_config(sim, tmp_path, audio=audio)
            with trio.fail_after(LIMIT):
                # the daemon's reopen backoff (0.5 s doubling to 10 s), shortened so the test is quick
                engine = AudioEngine(config.audio, backoff_base=0.05, backoff_cap=0.2)
                async with running_kiosk(config, audio=engine) as k:
                    await k.wait_state(KioskState.IDLE)
                    while k.kiosk.audio.status()["input_failures"] < 2:
                        await trio.sleep(0.01)
                    missing = (await k.ctl("status"))["audio"]
                    # a conversation without a microphone still opens and ends cleanly
                    assert (await k.ctl("start"))["ok"] is True
                    first = await sim.wait_for_conversation(0)
                    await k.wait_state(KioskState.CONVERSATION)
                    await k.ctl("end")
                    await sim.wait_for(lambda: not first.open)
                    await k.wait_state(KioskState.IDLE)

                    lead = np.zeros(int(LEAD_S * MIC_RATE), np.int16)
                    alsa.write_input(gone, np.concatenate([lead, speech, np.zeros(int(TAIL_S * MIC_RATE), np.int16)]))
                    while not k.kiosk.audio.status()["input_ok"]:
                        await trio.sleep(0.01)
                    back = (await k.ctl("status"))["audio"]
                    assert (await k.ctl("start"))["ok"] is True
                    second = await sim.wait_for_conversation(1)
                    await sim.wait_for(lambda: len(second.turns) >= 1)
                    await k.ctl("end")
                    await sim.wait_for(lambda: not second.open)
    finally:
        alsa.infile(gone).unlink(missing_ok=True)
    assert missing["input_device"] == gone and missing["input_ok"] is False and missing["input_format"] is None
    assert gone in missing["last_device_error"]
    assert missing["output_ok"] is True
    assert first.close_code == 1000
    assert back["input_ok"] is True and back["input_format"] == f"{MIC_RATE}Hz x1"
    assert find(second.audio_pcm, speech) >= 0  # the recovered mic is heard, sample for sample


# ------------------------------------------------------------------ half duplex

ECHO_AFTER_S = 0.8
"""The speaker's 'echo' starts this long after the visitor stops (the reply plays by then)."""


async def test_half_duplex_sends_silence_while_the_agent_speaks(alsa: AlsaFiles, tmp_path: Path) -> None:
    """Loud speech on the mic during the reply (its echo) reaches the agent as silence: no self-interruption."""
    speech = synth_speech(SPEECH_S, MIC_RATE, seed=7)
    echo = synth_speech(3.0, MIC_RATE, seed=3)
    parts = [np.zeros(int(LEAD_S * MIC_RATE), np.int16), speech, np.zeros(int(ECHO_AFTER_S * MIC_RATE), np.int16),
             echo, np.zeros(int(TAIL_S * MIC_RATE), np.int16)]
    alsa.write_input("kiosk_mic", np.concatenate(parts))
    sim_config = SimulatorConfig(end_of_speech_ms=300, reply_seconds=REPLY_S, tool_call=None, vad_score_ms=0,
                                 first_message=NO_GREETING,
                                 barge_in_ms=200)
    async with open_simulator(sim_config) as sim:
        audio = {"input": "kiosk_mic", "input_rate": MIC_RATE, "output": "kiosk_spk", "output_rate": SPEAKER_RATE,
                 "pacing": PACING, "echo": "half_duplex", "preroll_ms": 3000, "max_backlog_ms": 6000}
        # half duplex mutes the mic under any sound, the "listening" cue too: the visitor speaks at once here
        config = kiosk_config(sim, tmp_path, audio=audio, cues={"listening": ""})
        with trio.fail_after(LIMIT):
            async with running_kiosk(config) as k:
                await k.ctl("start")
                conv = await sim.wait_for_conversation()
                await sim.wait_for(lambda: len(conv.turns) >= 1)
                while not k.kiosk.board.status.agent_speaking:
                    await trio.sleep(0.01)
                while k.kiosk.board.status.agent_speaking:
                    await trio.sleep(0.01)
                interruptions = list(conv.interruptions)
                await trio.sleep(0.6)  # the mic is live again: the rest of the echo gets through
                await k.ctl("end")
                await sim.wait_for(lambda: not conv.open)
    assert interruptions == []  # the agent did not hear itself
    heard = conv.audio_pcm
    assert find(heard, speech) >= 0
    assert find(heard, echo[: MIC_RATE // 5]) == -1  # the echo's start was muted...
    assert heard[-MIC_RATE // 4 :].any()  # ...not the mic for good

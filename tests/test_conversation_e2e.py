"""kioskd run against the simulator, end to end over real loopback sockets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trio

from kiosk_harness import SPEECH_WAV, kiosk_config, read_wav, running_kiosk
from kioskd.simulator import SimulatorConfig, open_simulator
from kioskd.simulator.speech import synth_speech
from kioskd.state import KioskState

TIMEOUT = 30


def find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Index where ``needle`` starts inside ``haystack`` exactly, or -1."""
    first = np.flatnonzero(needle)[0]
    for start in np.flatnonzero(haystack == needle[first]) - first:
        if start >= 0 and np.array_equal(haystack[start:start + len(needle)], needle):
            return int(start)
    return -1


async def test_whole_conversation_through_the_control_socket(tmp_path: Path) -> None:
    sim_config = SimulatorConfig(ping_interval=0.5, vad_score_ms=100)
    async with open_simulator(sim_config) as sim:
        config = kiosk_config(sim, tmp_path)
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.wait_state(KioskState.IDLE)
                status = await k.ctl("status")
                assert (status["state"], status["conversation_id"]) == ("idle", None)

                assert (await k.ctl("start"))["ok"] is True
                conv = await sim.wait_for_conversation()
                await k.wait_state(KioskState.CONVERSATION)
                status = await k.ctl("status")
                assert status["state"] == "conversation"
                assert status["conversation_id"] == conv.conversation_id

                # a whole exchange: the agent heard the visitor, answered, called a tool, was pinged
                await sim.wait_for(lambda: conv.turns and conv.tool_results and len(conv.pongs) >= 2)
                while not k.kiosk.board.status.agent_speaking:
                    await trio.sleep(0.01)
                while k.kiosk.board.status.agent_speaking:
                    await trio.sleep(0.01)

                assert (await k.ctl("end"))["ok"] is True
                await sim.wait_for(lambda: not conv.open)
                await k.wait_state(KioskState.IDLE)
                assert (await k.ctl("status"))["conversation_id"] is None

    # the kiosk introduced itself first, with its identity as dynamic variables
    assert conv.client_data is not None
    assert conv.client_data.dynamic_variables == {"kiosk_id": "test-kiosk", "kiosk_location": "test bench"}
    # the microphone reached the agent intact, sample for sample
    speech, rate = read_wav(SPEECH_WAV)
    assert rate == 16000
    assert find(conv.audio_pcm, speech) >= 0
    # every ping was answered with its own event id
    assert all(p.rtt is not None for p in conv.pongs)
    # the tool call was answered from the registry
    assert conv.tool_results[0].is_error is False and "test-kiosk" in conv.tool_results[0].result
    # ended cleanly by the kiosk
    assert conv.close_code == 1000
    # the speaker WAV holds the agent's audio, sample for sample
    out, out_rate = read_wav(tmp_path / "out.wav")
    assert out_rate == 16000
    reply = synth_speech(sim_config.reply_seconds, 16000, seed=0)
    assert find(out, reply) >= 0


async def test_malformed_and_unknown_server_messages_are_survived(tmp_path: Path) -> None:
    async with open_simulator(SimulatorConfig()) as sim:
        config = kiosk_config(sim, tmp_path)
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.ctl("start")
                conv = await sim.wait_for_conversation()
                await k.wait_state(KioskState.CONVERSATION)
                assert sim.faults.malformed(4, "mixed") == 1
                await sim.wait_for(lambda: conv.turns)  # the conversation goes on
                session_stats = (await k.ctl("status"))["session"]
                assert session_stats["malformed"] + session_stats["unknown"] == 4
                assert session_stats["unknown_types"] == {"sim_unknown_event": 1}  # counted per type
                assert conv.open
                await k.ctl("end")
                await sim.wait_for(lambda: not conv.open)
    lines = k.log.getvalue()
    assert "malformed server message skipped" in lines
    skipped = [line for line in lines.splitlines() if "server event not used skipped" in line]
    assert skipped and all(line.startswith("level=debug") for line in skipped), "an unused event is no warning"


async def test_no_token_in_any_log_line(tmp_path: Path) -> None:
    async with open_simulator(SimulatorConfig()) as sim:
        config = kiosk_config(sim, tmp_path)
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.ctl("start")
                conv = await sim.wait_for_conversation()
                await sim.wait_for(lambda: conv.audio_chunks > 10)
                await k.ctl("end")
                await sim.wait_for(lambda: not conv.open)
    lines = k.log.getvalue()
    assert "conversation open" in lines  # the log really was captured
    assert sim.config.kiosk_token not in lines
    for url_token in sim.backend.tokens.issued():
        assert url_token not in lines

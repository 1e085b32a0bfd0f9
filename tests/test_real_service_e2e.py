"""The kiosk against the default simulator, which behaves like the service (issue 12).

Real loopback sockets, the real daemon, WAV microphone and speaker. What the service
does by default and the kiosk must cope with: no ``vad_score`` (the kiosk's own VAD
keeps the visitor's turn alive and drives the light), per-turn event ids (a reply
reusing the interruption's id is heard), ``end_call`` through ``agent_tool_response``,
errors and refusals in words, pings and tool calls of loose shapes, and the visitor's
own messages over the control socket and a feedback button.
"""

from __future__ import annotations

import itertools
import json
import wave
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import trio
from gpiozero.pins.mock import MockFactory, MockPWMPin

from kiosk_harness import kiosk_config, read_wav, running_kiosk
from kioskd.protocol.client_messages import Feedback, UserAudioChunk
from kioskd.simulator import SimulatorConfig, open_simulator
from kioskd.simulator.speech import silence, synth_speech
from kioskd.state import KioskState, Status

TIMEOUT = 40
RATE = 16000


def mic_file(path: Path, *parts: tuple[str, float]) -> Path:
    """A WAV microphone: ("speech"|"silence", seconds) parts in order."""
    audio = [synth_speech(s, RATE, seed=3 + i) if kind == "speech" else silence(s, RATE)
             for i, (kind, s) in enumerate(parts)]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.concatenate(audio).astype("<i2").tobytes())
    return path


def find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Index where ``needle`` starts inside ``haystack`` exactly, or -1."""
    first = np.flatnonzero(needle)[0]
    for start in np.flatnonzero(haystack == needle[first]) - first:
        if start >= 0 and np.array_equal(haystack[start:start + len(needle)], needle):
            return int(start)
    return -1


class BoardLog:
    """Every status the board showed, with its Trio time."""

    def __init__(self) -> None:
        self.history: list[tuple[float, Status]] = []

    def __call__(self, status: Status) -> None:
        self.history.append((trio.current_time(), status))

    def speaking_ended(self) -> list[float]:
        """When agent audio stopped being audible."""
        return [t for (_, prev), (t, s) in itertools.pairwise(self.history) if prev.agent_speaking
                and not s.agent_speaking]


async def test_a_visitor_talking_past_the_idle_timeout_is_not_cut_off_and_the_light_follows_them(
    tmp_path: Path,
) -> None:
    """No vad_score, no tentative transcripts: only the kiosk's own VAD knows the visitor talks."""
    sim_config = SimulatorConfig(first_message="", tentative_ms=0, reply_seconds=0.3, tool_call=None)
    mic = mic_file(tmp_path / "mic.wav", ("silence", 0.3), ("speech", 5.0), ("silence", 6.0))
    board = BoardLog()
    async with open_simulator(sim_config) as sim:
        config = kiosk_config(sim, tmp_path, audio={"input": f"wav:{mic}"}, conversation={"idle_timeout": 2.0})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config, setup=lambda kiosk: kiosk.board.listen(board)) as k:
                await k.ctl("start")
                conv = await sim.wait_for_conversation()
                await sim.wait_for(lambda: bool(conv.turns))  # the agent heard the whole utterance
                assert conv.open, "cut off while talking"
                await sim.wait_for(lambda: not conv.open)  # then idle ends it
                await k.wait_state(KioskState.IDLE)
    assert conv.turns[0].speech_ms >= 4500
    assert "vad_score" not in conv.sent_types and "tentative_user_transcript" not in conv.sent_types
    outcome = k.kiosk.supervisor.last_outcome
    assert conv.close_code == 1000 and outcome is not None and "no speech" in outcome.reason
    # the light followed the visitor's voice although the agent sent no vad_score
    levels = [s.vad_score for _, s in board.history if s.state is KioskState.CONVERSATION]
    assert max(levels) >= 0.8 and min(levels) == 0.0


async def test_a_reply_that_reuses_the_interruption_id_is_heard(tmp_path: Path) -> None:
    """The visitor cuts the greeting (turn 1); the interruption carries their turn's id (2),
    and so does the agent's reply: the JS client's rule plays it (the Python client's drops it)."""
    sim_config = SimulatorConfig(reply_seconds=2.0, reply_speedup=2.0, tool_call=None)
    mic = mic_file(tmp_path / "mic.wav", ("silence", 0.4), ("speech", 1.2), ("silence", 8.0))
    async with open_simulator(sim_config) as sim:
        config = kiosk_config(sim, tmp_path, audio={"input": f"wav:{mic}"})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.ctl("start")
                conv = await sim.wait_for_conversation()
                await sim.wait_for(lambda: bool(conv.turns) and conv.sent.count(("audio", 2)) * 0.2 >= 2.0)
                await sim.wait_for(lambda: not k.kiosk.board.status.agent_speaking)
                await trio.sleep(0.3)
                await k.ctl("end")
                await sim.wait_for(lambda: not conv.open)
    assert conv.interruptions == [2] and {i for kind, i in conv.sent if kind == "audio"} == {1, 2}
    out, _ = read_wav(tmp_path / "out.wav")
    assert find(out, synth_speech(sim_config.reply_seconds, RATE, seed=0)) >= 0, "the reply (id 2) was not heard"


async def test_client_events_override_is_sent_and_a_refusal_is_explained(tmp_path: Path) -> None:
    events = ["audio", "interruption", "agent_response", "user_transcript", "conversation_initiation_metadata",
              "ping", "vad_score"]
    mic = mic_file(tmp_path / "mic.wav", ("silence", 0.3), ("speech", 1.0), ("silence", 2.0))
    async with open_simulator(SimulatorConfig(first_message="", tool_call=None)) as sim:
        config = kiosk_config(sim, tmp_path, audio={"input": f"wav:{mic}"}, agent={"client_events": events})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.ctl("start")
                conv = await sim.wait_for_conversation()
                await sim.wait_for(lambda: "vad_score" in conv.sent_types and bool(conv.turns))
                await k.ctl("end")
                await sim.wait_for(lambda: not conv.open)
    assert conv.client_events == frozenset(events)
    assert conv.client_data is not None and conv.client_data.conversation_config_override is not None

    refusing = SimulatorConfig(forbidden_overrides=("conversation.client_events",))
    async with open_simulator(refusing) as sim:
        config = kiosk_config(sim, tmp_path, agent={"client_events": events})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.ctl("start")
                conv = await sim.wait_for_conversation()
                await sim.wait_for(lambda: not conv.open)
                await k.wait_state(KioskState.ERROR)
                status = await k.ctl("status")
    assert conv.close_code == 1008
    assert status["reason"].startswith("the agent refused this kiosk's override of conversation.client_events")
    assert "allow it in the agent's security settings" in status["reason"]
    assert "refused this kiosk's override" in k.log.getvalue()


@pytest.mark.parametrize("when", ["before", "during", "after"])
async def test_end_call_ends_the_conversation_after_the_goodbye_has_played(
    tmp_path: Path, when: Literal["before", "during", "after"]
) -> None:
    sim_config = SimulatorConfig(first_message="", transcripts=("thanks, goodbye",), tool_call=None, end_call=when,
                                 reply_seconds=1.0, end_call_close_after=5.0)
    mic = mic_file(tmp_path / "mic.wav", ("silence", 0.3), ("speech", 1.0), ("silence", 10.0))
    board = BoardLog()
    async with open_simulator(sim_config) as sim:
        config = kiosk_config(sim, tmp_path, audio={"input": f"wav:{mic}"})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config, setup=lambda kiosk: kiosk.board.listen(board)) as k:
                await k.ctl("start")
                conv = await sim.wait_for_conversation()
                await sim.wait_for(lambda: not conv.open)
                await k.wait_state(KioskState.IDLE)
    assert conv.turns[0].reply == sim_config.goodbye and len(conv.end_calls) == 1
    # the kiosk closed it (1000), not the agent's own close seconds later
    assert (conv.close_code, conv.close_reason) != (1000, "the agent ended the call")
    assert conv.close_code == 1000
    outcome = k.kiosk.supervisor.last_outcome
    assert outcome is not None and "the agent ended the call (end_call)" in outcome.reason
    # the goodbye played in full
    out, _ = read_wav(tmp_path / "out.wav")
    assert find(out, synth_speech(sim_config.reply_seconds, RATE, seed=0)) >= 0
    # within 1 s of the last audio
    assert conv.ended_at is not None and conv.ended_at - board.speaking_ended()[-1] <= 1.0
    # the microphone stopped when end_call arrived (a chunk may have been in flight)
    late = [t for t, m in conv.messages if isinstance(m, UserAudioChunk) and t > conv.end_calls[0] + 0.1]
    assert late == []


async def test_loose_shapes_are_answered_and_errors_are_told_in_words(tmp_path: Path) -> None:
    async with open_simulator(SimulatorConfig(first_message="", tool_call=None)) as sim:
        config = kiosk_config(sim, tmp_path)
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.ctl("start")
                conv = await sim.wait_for_conversation()
                await k.wait_state(KioskState.CONVERSATION)
                raw = [
                    {"type": "ping", "ping_event": {"event_id": 77.0, "ping_ms": 12.5}},
                    {"type": "ping", "ping_event": {"event_id": 78, "ping_ms": "n/a"}},
                    {"type": "client_tool_call", "client_tool_call": {
                        "tool_name": "kiosk_info", "tool_call_id": "t-null", "parameters": None, "event_id": 1}},
                    {"type": "client_tool_call", "client_tool_call": {"tool_name": "teleport", "tool_call_id": "t-x"}},
                    {"type": "error", "error_event": {"code": 1002, "message": None, "error_type": None}},
                ]
                for obj in raw:
                    sim.faults.send_raw(json.dumps(obj))
                await sim.wait_for(lambda: {77, 78} <= {p.event_id for p in conv.pongs} and len(conv.tool_results) == 2)
                sim.faults.close(1008, "Invalid message received")
                await sim.wait_for(lambda: not conv.open)
                await k.wait_state(KioskState.IDLE)
                status = await k.ctl("status")
    results = {r.tool_call_id: r for r in conv.tool_results}
    assert results["t-null"].is_error is False and "test-kiosk" in results["t-null"].result
    assert results["t-x"].is_error is True and "teleport" in results["t-x"].result
    assert status["last_end"] == (
        "the agent rejected the conversation: invalid input or authorisation (close reason: 'Invalid message "
        "received'); the agent's error: code 1002")
    assert "agent reported an error" in k.log.getvalue()


async def test_visitor_messages_over_the_control_socket(tmp_path: Path) -> None:
    mic = mic_file(tmp_path / "mic.wav", ("silence", 20.0))
    async with open_simulator(SimulatorConfig(tool_call=None, reply_seconds=0.3)) as sim:
        config = kiosk_config(sim, tmp_path, audio={"input": f"wav:{mic}"})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                refused = await k.ctl("say", text="hello?")
                await k.ctl("start")
                conv = await sim.wait_for_conversation()
                await sim.wait_for(lambda: conv.greeting is not None and "audio" in conv.sent_types)
                greeting_id = next(i for kind, i in conv.sent if kind == "agent_response")
                answers = [
                    await k.ctl("feedback", text="like"),
                    await k.ctl("context", text="the front door just opened"),
                    await k.ctl("activity"),
                    await k.ctl("say", text="Where is the cloakroom?"),
                    await k.ctl("feedback", text="meh"),
                ]
                await sim.wait_for(lambda: bool(conv.turns) and bool(conv.feedback))
                await k.ctl("end")
                await sim.wait_for(lambda: not conv.open)
    assert refused == {"ok": False, "error": "no conversation is open"}
    assert [a["ok"] for a in answers] == [True, True, True, True, False]
    assert "like or dislike" in answers[-1]["error"]
    assert greeting_id is not None and conv.feedback == [Feedback(event_id=greeting_id, score="like")]
    assert conv.contextual_updates == ["the front door just opened"] and len(conv.user_activity) == 1
    assert conv.user_messages == ["Where is the cloakroom?"] and conv.turns[0].transcript is None
    assert conv.client_data is not None and conv.client_data.user_id == "test-kiosk"
    assert conv.client_data.source_info is not None and conv.client_data.source_info.source == "kioskd"


async def test_a_feedback_button_rates_the_agent(tmp_path: Path) -> None:
    factory = MockFactory(pin_class=MockPWMPin)
    mic = mic_file(tmp_path / "mic.wav", ("silence", 20.0))
    try:
        async with open_simulator(SimulatorConfig(tool_call=None, reply_seconds=0.3)) as sim:
            config = kiosk_config(sim, tmp_path, audio={"input": f"wav:{mic}"},
                                  button={"like_pin": 22, "dislike_pin": 23, "bounce_ms": 0})
            with trio.fail_after(TIMEOUT):
                async with running_kiosk(config, pin_factory=factory) as k:
                    factory.pin(23).drive_low()  # no conversation: ignored
                    factory.pin(23).drive_high()
                    await k.ctl("start")
                    conv = await sim.wait_for_conversation()
                    await sim.wait_for(lambda: "audio" in conv.sent_types)
                    await trio.sleep(0.2)  # the kiosk has the greeting's id
                    factory.pin(23).drive_low()
                    await sim.wait_for(lambda: bool(conv.feedback))
                    factory.pin(23).drive_high()
                    await k.ctl("end")
                    await sim.wait_for(lambda: not conv.open)
    finally:
        factory.close()
    assert [f.score for f in conv.feedback] == ["dislike"]
    assert 'msg="feedback button ignored" score=dislike' in k.log.getvalue()



"""Conformance: the official ``elevenlabs`` Python client, unmodified, against the default simulator.

If the simulator drifted from the service's protocol (event shapes, ids, the signed-URL
endpoint, what it accepts from a client), the client that ElevenLabs ships would trip
over it here. One conversation: the agent's greeting, a voice turn, a client tool call,
feedback, pings; then the client ends it. The client runs on its own threads, as it does
in an application; the simulator runs in Trio, and the test waits on its records.

The client has no feedback method (its ``ClientToOrchestratorEvent`` lists ``feedback``);
feedback is sent on its own socket in the JS client's shape (``BaseConversation.sendFeedback``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import trio
from elevenlabs.client import ElevenLabs
from elevenlabs.conversational_ai.conversation import AudioInterface, ClientTools, Conversation

from kioskd.simulator import SimulatorConfig, open_simulator
from kioskd.simulator.speech import silence, synth_speech

TIMEOUT = 30
CHUNK = 4000  # 250 ms at 16 kHz: what the client's DefaultAudioInterface delivers


class ScriptedAudio(AudioInterface):
    """A microphone that says one sentence once ``go`` is set (silence before and after).

    And a speaker that keeps everything.
    """

    def __init__(self) -> None:
        self.go = threading.Event()
        self.played = bytearray()
        self.interrupts = 0
        self._stop = threading.Event()

    def start(self, input_callback: Callable[[bytes], None]) -> None:
        self._thread = threading.Thread(target=self._mic, args=(input_callback,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def output(self, audio: bytes) -> None:
        self.played += audio

    def interrupt(self) -> None:
        self.interrupts += 1

    def _mic(self, send: Callable[[bytes], None]) -> None:
        speech = np.concatenate([synth_speech(1.2, 16000, seed=5), silence(1.0)])
        said = False
        while not self._stop.is_set():
            chunks = [silence(CHUNK / 16000)]
            if self.go.is_set() and not said:
                chunks = [speech[i : i + CHUNK] for i in range(0, len(speech), CHUNK)]
                said = True
            for chunk in chunks:
                if self._stop.is_set():
                    return
                send(chunk.astype("<i2").tobytes())
                time.sleep(len(chunk) / 16000 / 4)  # 4x real time: quick, still a stream


async def test_official_python_client_holds_a_voice_turn_a_tool_call_and_feedback() -> None:
    cfg = SimulatorConfig(
        transcripts=("what is on today",), replies=("A concert at eight.",), reply_seconds=0.6,
        reply_speedup=8.0, ping_interval=0.3, tool_call=("kiosk_info", {"detail": "short"}),
    )
    heard: dict[str, list[Any]] = {"agent": [], "user": [], "alignment": [], "latency": []}
    tool_params: list[dict[str, Any]] = []
    audio = ScriptedAudio()
    with trio.fail_after(TIMEOUT):
        async with open_simulator(cfg) as sim:
            tools = ClientTools()

            def kiosk_info(params: dict[str, Any]) -> str:
                tool_params.append(params)
                return "Lobby kiosk, ground floor"

            tools.register("kiosk_info", kiosk_info)
            conversation = Conversation(
                ElevenLabs(api_key=cfg.api_key, base_url=sim.api_base),
                cfg.agent_id,
                user_id="visitor-7",
                # the client fetches a signed URL from {base_url}/v1/convai/conversation/get-signed-url
                requires_auth=True,
                audio_interface=audio,
                client_tools=tools,
                callback_agent_response=heard["agent"].append,
                callback_user_transcript=heard["user"].append,
                callback_audio_alignment=heard["alignment"].append,
                callback_latency_measurement=heard["latency"].append,
            )
            await trio.to_thread.run_sync(conversation.start_session)
            try:
                conv = await sim.wait_for_conversation()
                await sim.wait_for(lambda: bool(heard["agent"]))  # the greeting
                await sim.wait_for(lambda: len(audio.played) >= 2 * 16000 * cfg.reply_seconds)
                # The greeting plays in real time; speaking over it would interrupt it, and this
                # client drops a reply whose id equals the interruption's (the service gives the
                # reply the interrupting turn's id; see test_conversation's interruption tests).
                await trio.sleep(cfg.reply_seconds)
                audio.go.set()
                await sim.wait_for(lambda: len(conv.turns) == 1 and bool(conv.tool_results))
                await sim.wait_for(lambda: len(heard["agent"]) == 2 and len(conv.pongs) >= 2)
                reply_id = next(event_id for kind, event_id in reversed(conv.sent) if kind == "agent_response")
                ws = conversation._ws
                assert ws is not None
                await trio.to_thread.run_sync(
                    ws.send, json.dumps({"type": "feedback", "score": "like", "event_id": reply_id})
                )
                await sim.wait_for(lambda: bool(conv.feedback))
            finally:
                await trio.to_thread.run_sync(conversation.end_session)
                await trio.to_thread.run_sync(conversation.wait_for_session_end)
            await sim.wait_for(lambda: not conv.open)

    # what the client sent first, as the simulator recorded it
    assert conv.client_data is not None
    assert conv.client_data.user_id == "visitor-7"
    assert conv.client_data.source_info is not None and conv.client_data.source_info.source == "python_sdk"
    assert json.loads(conv.raw_messages[0][1])["type"] == "conversation_initiation_client_data"
    # the voice turn: the client heard the greeting and the reply, the transcript, the alignment
    assert heard["agent"] == [cfg.first_message, "A concert at eight."]
    assert heard["user"] == ["what is on today"]
    assert "".join(ch for a in heard["alignment"] for ch in a.chars).startswith(cfg.first_message)
    assert len(audio.played) == 2 * 2 * 16000 * cfg.reply_seconds  # greeting and reply, every sample
    # the tool call: run with its parameters (plus the id the client adds), answered as a string
    assert tool_params and tool_params[0]["detail"] == "short"
    result = conv.tool_results[0]
    assert (result.tool_call_id, result.result, result.is_error) == (
        conv.tool_calls[0],
        "Lobby kiosk, ground floor",
        False,
    )
    # feedback on the reply's event id; pings answered with their own ids
    assert [(f.event_id, f.score) for f in conv.feedback] == [(reply_id, "like")]
    assert conv.pongs and all(pong.rtt is not None for pong in conv.pongs)
    # nothing the client sent was refused: it ended the conversation itself, normally
    assert conv.close_code == 1000
    assert audio.interrupts == 0

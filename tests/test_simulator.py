"""The simulated agent and signing backend, driven by a real trio-websocket client and httpx on loopback."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
import soxr
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from kioskd.audio.formats import AudioFormat, decode, encode
from kioskd.protocol import codec
from kioskd.protocol.client_messages import (
    DEFAULT_CLIENT_EVENTS,
    AgentOverride,
    ClientMessage,
    ClientToolResult,
    ConversationConfigOverride,
    ConversationInitiationClientData,
    ConversationOverride,
    Feedback,
    Pong,
    SourceInfo,
    UserActivity,
    UserAudioChunk,
    UserMessage,
)
from kioskd.protocol.codec import ProtocolError, decode_server_event
from kioskd.protocol.common import ContextualUpdate
from kioskd.protocol.server_events import (
    AgentChatResponsePart,
    AgentResponse,
    AgentResponseCorrection,
    AgentToolResponse,
    AudioEvent,
    ChatResponsePartBody,
    ClientToolCall,
    ConversationInitiationMetadata,
    ErrorEvent,
    InternalTentativeAgentResponse,
    Interruption,
    Ping,
    ServerEvent,
    TentativeUserTranscript,
    UnknownEvent,
    UserTranscript,
    VadScore,
)
from kioskd.simulator import Simulator, SimulatorConfig, open_simulator
from kioskd.simulator.faults import BackendFaults
from kioskd.simulator.settings import AGENT_CLIENT_EVENTS, DEFAULT_KIOSK_TOKEN, LEGACY
from kioskd.simulator.speech import silence, synth_speech
from kioskd.simulator.turns import EndOfSpeech, FrameSplitter, TurnDetector, VadScoreWindow

TIMEOUT = 10
E = TypeVar("E")

#: Quick, and an agent without a first message (the greeting has tests of its own).
FAST = dict(ping_interval=30.0, client_data_wait=0.2, reply_seconds=1.0, reply_speedup=10.0, first_message="")


def fast_config(**overrides: Any) -> SimulatorConfig:
    """A simulator tuned for quick tests (overrides win)."""
    return SimulatorConfig(**{**FAST, **overrides})


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator(fast_config()) as s:
        yield s


class Client:
    """A test client: keeps every server event it saw, answers pings when asked to."""

    def __init__(self, ws: WebSocketConnection, *, answer_pings: bool = True) -> None:
        self.ws = ws
        self.answer_pings = answer_pings
        self.events: list[ServerEvent | UnknownEvent] = []

    async def send(self, message: ClientMessage) -> None:
        await self.ws.send_message(codec.encode(message))

    async def send_audio(self, samples: np.ndarray, fmt: str = "pcm_16000", chunk_ms: int = 100) -> bytes:
        """Send samples in ``fmt`` as user_audio_chunk messages; returns the bytes sent."""
        f = AudioFormat.parse(fmt)
        step = f.rate * chunk_ms // 1000
        sent = bytearray()
        for i in range(0, len(samples), step):
            data = encode(samples[i : i + step], f)
            sent += data
            await self.send(UserAudioChunk(user_audio_chunk=data))
        return bytes(sent)

    async def next(self) -> ServerEvent | UnknownEvent:
        event = decode_server_event(await self.ws.get_message())
        self.events.append(event)
        if self.answer_pings and isinstance(event, Ping):
            await self.send(Pong(event_id=event.ping_event.event_id))
        return event

    async def until(self, kind: type[E]) -> E:
        while True:
            event = await self.next()
            if isinstance(event, kind):
                return event

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


async def close_code(ws: WebSocketConnection) -> int | None:
    """Read until the server closes; the close code it sent (1006 for a dead socket)."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed as exc:
        return exc.reason.code if exc.reason else None


def utterance(seconds: float = 1.5, pause: float = 0.8, rate: int = 16000, seed: int = 0) -> np.ndarray:
    return np.concatenate([synth_speech(seconds, rate, seed=seed), silence(pause, rate)])


# ------------------------------------------------------------------ pure parts


def test_unknown_formats_are_rejected() -> None:
    with pytest.raises(ValueError, match="pcm_11025"):
        SimulatorConfig(input_format="pcm_11025")
    with pytest.raises(ValueError):
        SimulatorConfig(output_format="mp3_44100")


def test_synth_speech_is_deterministic_and_speech_to_webrtcvad() -> None:
    import webrtcvad

    a, b = synth_speech(1.0, 16000, seed=3), synth_speech(1.0, 16000, seed=3)
    assert a.dtype == np.int16 and len(a) == 16000 and np.array_equal(a, b)
    assert not np.array_equal(a, synth_speech(1.0, 16000, seed=4))
    vad = webrtcvad.Vad(2)
    frames = [a[i : i + 160].tobytes() for i in range(0, 16000, 160)]
    assert np.mean([vad.is_speech(f, 16000) for f in frames]) > 0.9
    fresh = webrtcvad.Vad(2)  # (a used one has a hangover after speech)
    assert not any(fresh.is_speech(f.tobytes(), 16000) for f in FrameSplitter(160).feed(silence(0.5)))


def test_turn_detector_needs_enough_silence_and_enough_speech() -> None:
    det = TurnDetector(end_of_speech_ms=600)
    assert all(det.feed(True) is None for _ in range(50))
    assert all(det.feed(False) is None for _ in range(59))
    det.feed(True)  # speech again: the silence count restarts
    assert all(det.feed(False) is None for _ in range(59))
    assert det.feed(False) == EndOfSpeech(speech_ms=510)
    assert not det.in_speech
    # A 50 ms blip is not an utterance.
    for _ in range(5):
        det.feed(True)
    assert [det.feed(False) for _ in range(60)] == [None] * 60


def test_vad_score_window_and_frame_splitter() -> None:
    win = VadScoreWindow(100)
    scores = [win.feed(i % 2 == 0) for i in range(20)]
    assert scores == [None] * 9 + [0.5] + [None] * 9 + [0.5]
    split = FrameSplitter(160)
    assert split.feed(np.zeros(100, dtype=np.int16)) == []
    frames = split.feed(np.ones(300, dtype=np.int16))
    assert len(frames) == 2 and frames[0][:100].sum() == 0 and frames[0][100:].sum() == 60


def test_backend_faults_count_down_and_reject_unknown_modes() -> None:
    faults = BackendFaults()
    faults.set("503", times=2)
    assert [faults.take(), faults.take(), faults.take()] == ["503", "503", None]
    with pytest.raises(ValueError, match="418"):
        faults.set("418")


# ------------------------------------------------------------------ conversation


@pytest.mark.parametrize(("input_format", "output_format"), [("pcm_16000", "pcm_16000"), ("ulaw_8000", "pcm_44100")])
async def test_metadata_first_with_configured_formats_and_client_data_recorded(
    input_format: str, output_format: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_simulator(fast_config(input_format=input_format, output_format=output_format)) as sim,
            open_websocket_url(sim.signed_url()) as ws,
        ):
            client = Client(ws)
            data = ConversationInitiationClientData(dynamic_variables={"kiosk": "lobby", "floor": 2})
            await client.send(data)
            first = await client.next()
            assert isinstance(first, ConversationInitiationMetadata)
            body = first.conversation_initiation_metadata_event
            assert body.conversation_id == "conv_sim_1"
            assert (body.user_input_audio_format, body.agent_output_audio_format) == (input_format, output_format)
            conv = await sim.wait_for_conversation(0)
            assert conv.client_data == data
            assert conv.open


async def test_metadata_is_sent_without_client_data_after_the_wait(sim: Simulator) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(sim.signed_url()) as ws:
            start = trio.current_time()
            first = await Client(ws).next()
            assert isinstance(first, ConversationInitiationMetadata)
            assert trio.current_time() - start >= sim.config.client_data_wait * 0.9
            assert sim.conversations[0].client_data is None


async def test_pings_rise_pongs_are_recorded_and_rtt_reported() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(fast_config(ping_interval=0.1)) as sim, open_websocket_url(sim.signed_url()) as ws:
            client = Client(ws)
            pings = [await client.until(Ping) for _ in range(3)]
            ids = [ping.ping_event.event_id for ping in pings]
            assert ids == sorted(ids) and len(set(ids)) == 3
            assert pings[0].ping_event.ping_ms is None
            assert pings[2].ping_event.ping_ms is not None and pings[2].ping_event.ping_ms >= 0
            conv = sim.conversations[0]
            await sim.wait_for(lambda: len(conv.pongs) >= 3)
            assert [pong.event_id for pong in conv.pongs[:3]] == ids
            assert all(pong.rtt is not None and pong.rtt >= 0 for pong in conv.pongs)


@pytest.mark.parametrize("input_format", ["pcm_16000", "ulaw_8000", "pcm_44100"])
async def test_audio_round_trip_gives_transcript_response_and_rising_audio(input_format: str) -> None:
    cfg = fast_config(input_format=input_format, transcripts=("where is the library",), replies=("Second floor.",))
    with trio.fail_after(TIMEOUT):
        async with open_simulator(cfg) as sim, open_websocket_url(sim.signed_url()) as ws:
            client = Client(ws)
            await client.until(ConversationInitiationMetadata)
            rate = AudioFormat.parse(input_format).rate
            sent = await client.send_audio(utterance(rate=rate), input_format)
            transcript = await client.until(UserTranscript)
            assert transcript.user_transcription_event.user_transcript == "where is the library"
            response = await client.until(AgentResponse)
            assert response.agent_response_event.agent_response == "Second floor."
            audio = bytearray()
            ids: list[int] = []
            while len(audio) < 2 * 16000 * cfg.reply_seconds:
                event = await client.until(AudioEvent)
                ids.append(event.audio_event.event_id)
                audio += event.audio_event.audio_base_64
            # one agent turn, one event id: the visitor's turn's, shared by transcript, response and audio
            turn = transcript.user_transcription_event.event_id
            assert len(ids) >= 4 and set(ids) == {turn} and response.agent_response_event.event_id == turn
            assert len(audio) == 2 * 16000 * cfg.reply_seconds
            tentative = client.of(TentativeUserTranscript)
            assert tentative and {e.tentative_user_transcription_event.event_id for e in tentative} == {turn}
            assert "where is the library".startswith(tentative[0].tentative_user_transcription_event.user_transcript)
            assert not client.of(VadScore), "vad_score is not among the default client events"
            conv = sim.conversations[0]
            await sim.wait_for(lambda: len(conv.audio_raw) == len(sent))
            assert bytes(conv.audio_raw) == sent
            assert np.array_equal(conv.audio_pcm, decode(sent, AudioFormat.parse(input_format)))
            assert len(conv.turns) == 1 and 1200 <= conv.turns[0].speech_ms <= 1800


async def test_espeak_speech_is_heard_as_a_turn(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    wav = tmp_path / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "hello, where can I find the coffee machine"], check=True)
    with wave.open(str(wav)) as w:
        speech = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        rate = w.getframerate()
    speech16 = soxr.resample(speech, rate, 16000).astype(np.int16)
    with trio.fail_after(TIMEOUT):
        async with open_simulator(fast_config()) as sim, open_websocket_url(sim.signed_url()) as ws:
            client = Client(ws)
            await client.send_audio(np.concatenate([speech16, silence(0.8)]))
            transcript = await client.until(UserTranscript)
            assert transcript.user_transcription_event.user_transcript.startswith("(simulated transcript: ")
            assert sim.conversations[0].turns[0].speech_ms >= 1000


@pytest.mark.parametrize("event_ids", ["turn", "message"])
async def test_speaking_over_the_agent_interrupts_it(event_ids: str) -> None:
    events = (*AGENT_CLIENT_EVENTS, "agent_response_correction")
    cfg = fast_config(reply_seconds=3.0, reply_speedup=2.0, tool_call=None, event_ids=event_ids, client_events=events)
    with trio.fail_after(TIMEOUT):
        async with open_simulator(cfg) as sim, open_websocket_url(sim.signed_url()) as ws:
            client = Client(ws)
            await client.send_audio(utterance())
            await client.until(AudioEvent)
            await client.send_audio(utterance(0.5, 0.8, seed=7))  # barge in
            interruption = await client.until(Interruption)
            cut = interruption.interruption_event.event_id
            audio_ids = [e.audio_event.event_id for e in client.of(AudioEvent)]
            if event_ids == "turn":
                # the interruption carries the interrupting turn's id: the old reply's is lower
                assert set(audio_ids) == {cut - 1}
            else:  # today's behaviour before issue 12: the id of the last audio chunk sent
                assert cut == max(audio_ids)
            correction = await client.until(AgentResponseCorrection)
            body = correction.agent_response_correction_event
            assert body.original_agent_response == cfg.replies[0]
            assert body.corrected_agent_response.endswith("...")
            # The barge-in utterance is a turn of its own; its reply carries the interruption's id
            # (per turn) or continues the ids (per message).
            transcript = await client.until(UserTranscript)
            nxt = await client.until(AudioEvent)
            if event_ids == "turn":
                assert nxt.audio_event.event_id == cut == transcript.user_transcription_event.event_id
            else:
                assert nxt.audio_event.event_id > cut
            between = client.events[client.events.index(interruption) : -1]
            assert not any(isinstance(e, AudioEvent) for e in between), "audio of the interrupted reply kept coming"
            conv = sim.conversations[0]
            assert conv.interruptions == [cut]
            assert len(conv.turns) == 2


async def test_no_interruption_when_the_agent_has_finished() -> None:
    cfg = fast_config(reply_seconds=0.3, tool_call=None)
    with trio.fail_after(TIMEOUT):
        async with open_simulator(cfg) as sim, open_websocket_url(sim.signed_url()) as ws:
            client = Client(ws)
            await client.send_audio(utterance())
            await client.until(AgentResponse)
            await sim.wait_for(lambda: len(sim.conversations[0].audio_event_ids) >= 2)
            await trio.sleep(0.4)  # the 0.3 s reply has played out
            await client.send_audio(utterance(0.6, 0.8, seed=9))
            await client.until(UserTranscript)
            assert len(client.of(UserTranscript)) == 2
            assert not client.of(Interruption)
            assert sim.conversations[0].interruptions == []


async def test_scripted_tool_call_result_is_recorded() -> None:
    cfg = fast_config(tool_call=("show_map", {"floor": 2}))
    with trio.fail_after(TIMEOUT):
        async with open_simulator(cfg) as sim, open_websocket_url(sim.signed_url()) as ws:
            client = Client(ws)
            await client.send_audio(utterance())
            call = await client.until(ClientToolCall)
            assert call.client_tool_call.tool_name == "show_map"
            assert call.client_tool_call.parameters == {"floor": 2}
            await client.send(ClientToolResult(tool_call_id=call.client_tool_call.tool_call_id, result="shown"))
            conv = sim.conversations[0]
            await sim.wait_for(lambda: bool(conv.tool_results))
            assert conv.tool_results == [
                ClientToolResult(tool_call_id=call.client_tool_call.tool_call_id, result="shown", is_error=False)
            ]
            assert conv.tool_calls == [call.client_tool_call.tool_call_id]


async def test_text_messages_are_recorded_and_user_message_is_a_turn(sim: Simulator) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(sim.signed_url()) as ws:
            client = Client(ws)
            await client.until(ConversationInitiationMetadata)
            await client.send(ContextualUpdate(text="visitor is holding a map"))
            await client.send(UserActivity())
            await client.send(UserMessage(text="what time is it?"))
            response = await client.until(AgentResponse)
            assert response.agent_response_event.agent_response == sim.config.replies[0]
            await client.until(AudioEvent)
            conv = sim.conversations[0]
            assert conv.contextual_updates == ["visitor is holding a map"]
            assert len(conv.user_activity) == 1
            assert conv.user_messages == ["what time is it?"]
            assert not client.of(UserTranscript)
            assert [type(m) for _, m in conv.messages] == [ContextualUpdate, UserActivity, UserMessage]


# ------------------------------------------------------------------ authorisation and closes


@pytest.mark.parametrize(
    "make_url",
    [
        lambda sim: sim.signed_url().rsplit("token=", 1)[0] + "token=forged",
        lambda sim: sim.public_url(),
        lambda sim: sim.signed_url().replace("agent_id=agent_sim", "agent_id=agent_other"),
        lambda sim: sim.public_url("agent_other"),
    ],
    ids=["bad-token", "missing-token", "token-for-other-agent", "unknown-agent"],
)
async def test_unauthorised_connections_are_closed_1008(sim: Simulator, make_url: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(make_url(sim)) as ws:
            assert await close_code(ws) == 1008
        assert sim.conversations == []
        assert len(sim.rejected) == 1


async def test_public_agent_accepts_a_missing_token_but_not_a_bad_one() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(fast_config(require_token=False)) as sim:
            async with open_websocket_url(sim.public_url()) as ws:
                assert isinstance(await Client(ws).next(), ConversationInitiationMetadata)
            async with open_websocket_url(sim.public_url() + "&token=bad") as ws:
                assert await close_code(ws) == 1008


async def test_expired_token_cannot_start_a_conversation() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(fast_config(token_ttl=0.1)) as sim:
            url = sim.signed_url()
            await trio.sleep(0.2)
            async with open_websocket_url(url) as ws:
                assert await close_code(ws) == 1008
            assert sim.rejected[0][1] == "token expired"


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        '{"user_audio_chunk": "***not base64***"}',
        '{"type": "pong", "event_id": "three"}',
        '{"type": "no_such_message"}',
        "[1, 2, 3]",
    ],
    ids=["json", "base64", "wrong-type", "unknown-type", "not-object"],
)
async def test_invalid_client_message_closes_1008_and_the_simulator_keeps_serving(sim: Simulator, bad: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(sim.signed_url()) as ws:
            await Client(ws).until(ConversationInitiationMetadata)
            await ws.send_message(bad)
            assert await close_code(ws) == 1008
        assert sim.conversations[0].close_code == 1008
        async with open_websocket_url(sim.signed_url()) as ws:
            assert isinstance(await Client(ws).next(), ConversationInitiationMetadata)
        assert sim.conversations[1].conversation_id == "conv_sim_2"


async def test_silence_timeout_closes_1002_and_audio_keeps_it_open() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(fast_config(silence_timeout=0.5)) as sim:
            async with open_websocket_url(sim.signed_url()) as ws:
                client = Client(ws)
                start = trio.current_time()
                for _ in range(8):  # 0.8 s of keep-alive silence
                    await client.send_audio(silence(0.1))
                    await trio.sleep(0.1)
                assert sim.conversations[0].open
                assert await close_code(ws) == 1002
                # The last audio went out after 0.7 s; the close comes the timeout after it.
                assert trio.current_time() - start >= 0.7 + 0.5 * 0.9
            assert sim.conversations[0].close_code == 1002


async def test_max_duration_sends_error_then_closes_1000() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(fast_config(max_duration=0.4)) as sim:
            async with open_websocket_url(sim.signed_url()) as ws:
                client = Client(ws)
                error = await client.until(ErrorEvent)
                assert error.error_event.error_type == "max_duration_exceeded"
                assert await close_code(ws) == 1000
            assert sim.conversations[0].close_code == 1000


# ------------------------------------------------------------------ agent faults


async def test_fault_drop_kills_the_tcp_connection(sim: Simulator) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(sim.signed_url()) as ws:
            await Client(ws).until(ConversationInitiationMetadata)
            assert sim.faults.drop() == 1
            assert await close_code(ws) == 1006  # abnormal: no close frame
        conv = sim.conversations[0]
        assert conv.dropped and not conv.open and conv.close_code is None


async def test_fault_close_with_code(sim: Simulator) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(sim.signed_url()) as ws:
            await Client(ws).until(ConversationInitiationMetadata)
            assert sim.faults.close(1011) == 1
            assert await close_code(ws) == 1011
        assert sim.conversations[0].close_code == 1011


async def test_fault_stall_sends_nothing_and_ignores_input_then_resumes() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(fast_config(ping_interval=0.1)) as sim, open_websocket_url(sim.signed_url()) as ws:
            client = Client(ws)
            await client.until(Ping)
            sim.faults.stall = True
            await trio.sleep(0.15)  # let anything already in flight land
            client.events.clear()
            await client.send(UserMessage(text="anyone there?"))
            with trio.move_on_after(0.5) as quiet:
                await client.next()
            assert quiet.cancelled_caught, f"stalled agent sent {client.events}"
            conv = sim.conversations[0]
            assert conv.open and conv.user_messages == [] and conv.ignored_messages >= 1
            sim.faults.stall = False
            await client.until(Ping)


async def test_fault_delay_holds_each_outgoing_message(sim: Simulator) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(sim.signed_url()) as ws:
            client = Client(ws)
            await client.until(ConversationInitiationMetadata)
            sim.faults.delay = 0.3
            start = trio.current_time()
            await client.send(UserMessage(text="hi"))
            await client.until(AudioEvent)
            # agent_response, then the first audio: two messages, each delayed.
            assert trio.current_time() - start >= 2 * 0.3 * 0.9


async def test_fault_malformed_events_reach_the_client() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(fast_config(ping_interval=0.2)) as sim, open_websocket_url(sim.signed_url()) as ws:
            client = Client(ws)
            await client.until(ConversationInitiationMetadata)
            assert sim.faults.malformed(8) == 1
            errors = unknown = 0
            while errors + unknown < 8:
                try:
                    event = decode_server_event(await ws.get_message())
                except ProtocolError:
                    errors += 1
                    continue
                unknown += isinstance(event, UnknownEvent)
            assert (errors, unknown) == (6, 2)  # json, type, base64 are errors; unknown-type decodes
            # The conversation carries on.
            await client.until(Ping)
            assert sum(t.startswith("malformed:") for t in sim.conversations[0].sent_types) == 8


# ------------------------------------------------------------------ signing backend


KIOSK_AUTH = {"Authorization": "Bearer sim-kiosk-token"}


async def test_backend_signed_url_starts_a_conversation(sim: Simulator) -> None:
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            r = await http.get(sim.backend_url, params={"agent_id": "agent_sim"}, headers=KIOSK_AUTH)
        assert r.status_code == 200
        url = r.json()["signed_url"]
        assert url.startswith(f"{sim.ws_base}/v1/convai/conversation?agent_id=agent_sim&token=")
        async with open_websocket_url(url) as ws:
            assert isinstance(await Client(ws).next(), ConversationInitiationMetadata)
        assert sim.backend_requests[-1].status == 200


@pytest.mark.parametrize(
    ("headers", "agent_id", "status"),
    [({"Authorization": "Bearer wrong"}, "agent_sim", 401), ({}, "agent_sim", 401), (KIOSK_AUTH, "agent_x", 403)],
)
async def test_backend_refuses_bad_token_and_unknown_agent(
    sim: Simulator, headers: dict[str, str], agent_id: str, status: int
) -> None:
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            r = await http.get(sim.backend_url, params={"agent_id": agent_id}, headers=headers)
        assert r.status_code == status
        assert "signed_url" not in r.json()


@pytest.mark.parametrize("mode", ["401", "429", "500", "503"])
async def test_backend_status_faults(sim: Simulator, mode: str) -> None:
    sim.backend_faults.set(mode, times=1, retry_after=17)
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            r = await http.get(sim.backend_url, params={"agent_id": "agent_sim"}, headers=KIOSK_AUTH)
            assert r.status_code == int(mode)
            assert r.headers.get("Retry-After") == ("17" if mode == "429" else None)
            again = await http.get(sim.backend_url, params={"agent_id": "agent_sim"}, headers=KIOSK_AUTH)
            assert again.status_code == 200  # times=1: the fault cleared itself


async def test_backend_garbage_and_bad_json_faults(sim: Simulator) -> None:
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            sim.backend_faults.set("garbage")
            r = await http.get(sim.backend_url, params={"agent_id": "agent_sim"}, headers=KIOSK_AUTH)
            assert r.status_code == 200
            with pytest.raises(json.JSONDecodeError):
                r.json()
            sim.backend_faults.set("bad_json")
            r = await http.get(sim.backend_url, params={"agent_id": "agent_sim"}, headers=KIOSK_AUTH)
            assert r.status_code == 200 and "signed_url" not in r.json()


async def test_backend_timeout_and_delay_faults(sim: Simulator) -> None:
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            sim.backend_faults.set("timeout")
            with pytest.raises(httpx.ReadTimeout):
                await http.get(sim.backend_url, params={"agent_id": "agent_sim"}, headers=KIOSK_AUTH, timeout=0.3)
            sim.backend_faults.reset()
            sim.backend_faults.delay = 0.3
            start = trio.current_time()
            r = await http.get(sim.backend_url, params={"agent_id": "agent_sim"}, headers=KIOSK_AUTH)
            assert r.status_code == 200
            assert trio.current_time() - start >= 0.3


@pytest.mark.parametrize("spelling", ["get_signed_url", "get-signed-url"])
async def test_upstream_endpoint_good_and_bad_key(sim: Simulator, spelling: str) -> None:
    url = f"{sim.api_base}/v1/convai/conversation/{spelling}"
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            r = await http.get(url, params={"agent_id": "agent_sim"}, headers={"xi-api-key": "sim-api-key"})
            assert r.status_code == 200
            signed = r.json()["signed_url"]
            assert signed.startswith(sim.ws_base) and "token=" in signed
            bad = await http.get(url, params={"agent_id": "agent_sim"}, headers={"xi-api-key": "nope"})
            assert bad.status_code == 401
            unknown = await http.get(url, params={"agent_id": "agent_x"}, headers={"xi-api-key": "sim-api-key"})
            assert unknown.status_code == 404
            sim.upstream_faults.set("503", times=1)
            assert (
                await http.get(url, params={"agent_id": "agent_sim"}, headers={"xi-api-key": "sim-api-key"})
            ).status_code == 503
        async with open_websocket_url(signed) as ws:
            assert isinstance(await Client(ws).next(), ConversationInitiationMetadata)


async def test_cli_description_names_the_urls_and_kiosk_config(sim: Simulator) -> None:
    from kioskd.simulator.cli import describe

    text = describe(sim)
    assert f'server = "{sim.ws_base}"' in text
    assert f'url = "{sim.backend_url}"' in text
    if sim.config.kiosk_token == DEFAULT_KIOSK_TOKEN:  # the demo token is named: it is the one to use
        assert f"kiosk token:        {DEFAULT_KIOSK_TOKEN}   (the demo default and the only one accepted" in text


def test_cli_description_never_echoes_a_chosen_token() -> None:
    from types import SimpleNamespace

    from kioskd.simulator.cli import describe

    sim = SimpleNamespace(config=SimulatorConfig(kiosk_token="my-own-secret"), ws_base="ws://h:1", backend_url="http://h:2/s",
                          api_base="http://h:2")
    text = describe(sim)  # type: ignore[arg-type]
    assert "my-own-secret" not in text
    assert (
        "kiosk token:        the one in $KIOSKD_SIM_KIOSK_TOKEN or --kiosk-token-file (the only one accepted)" in text
    )


def test_cli_rejects_unknown_format_and_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from kioskd.simulator.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--input-format", "mp3_44100"])
    assert exc.value.code == 2
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["--port", str(busy.getsockname()[1]), "--backend-port", "0"]) == 2
    assert "cannot listen" in capsys.readouterr().err


def test_config_is_a_plain_dataclass() -> None:
    fields = {f.name for f in dataclasses.fields(SimulatorConfig)}
    assert {"agent_id", "kiosk_token", "api_key", "input_format", "output_format", "ping_interval"} <= fields


async def test_default_silence_timeout_in_virtual_time(mock_clock: trio.testing.MockClock) -> None:
    """The service's 60 s no-audio close, without waiting 60 s (loopback I/O completes inside one step)."""
    mock_clock.autojump_threshold = 0
    with trio.fail_after(120):
        async with open_simulator(SimulatorConfig(ping_interval=30.0)) as sim:
            async with open_websocket_url(sim.signed_url()) as ws:
                start = trio.current_time()
                client = Client(ws)
                await client.until(ConversationInitiationMetadata)
                assert await close_code(ws) == 1002
                assert 60.0 <= trio.current_time() - start <= 61.5
            conv = sim.conversations[0]
            assert conv.close_code == 1002
            assert "ping" in conv.sent_types  # the 30 s ping went out on the way


# ------------------------------------------------------------------ like the real service (issue 12)


def real_config(**overrides: Any) -> SimulatorConfig:
    """The default (service-like) simulator, only faster."""
    return SimulatorConfig(**{**FAST, "first_message": SimulatorConfig().first_message, **overrides})


async def test_default_conversation_event_for_event_like_the_service() -> None:
    """Greeting first, tentative transcripts while the visitor talks, per-turn ids, alignment,
    only the default client events (no vad_score, corrections or internal events)."""
    cfg = real_config(transcripts=("where is the cafe",), replies=("Ground floor.",), tool_call=None, ping_interval=0.3)
    with trio.fail_after(TIMEOUT):
        async with open_simulator(cfg) as sim, open_websocket_url(sim.signed_url()) as ws:
            client = Client(ws)
            await client.send(ConversationInitiationClientData())
            assert isinstance(await client.next(), ConversationInitiationMetadata)
            greeting = await client.until(AgentResponse)
            assert greeting.agent_response_event.agent_response == cfg.first_message
            assert greeting.agent_response_event.event_id == 1
            chars = ""
            while len(chars) < len(cfg.first_message):
                audio = (await client.until(AudioEvent)).audio_event
                assert audio.event_id == 1 and audio.alignment is not None
                assert len(audio.alignment.chars) == len(audio.alignment.char_start_times_ms)
                chars += "".join(audio.alignment.chars)
            assert chars == cfg.first_message
            await trio.sleep(cfg.reply_seconds)  # the greeting has played: no barge-in
            await client.send_audio(utterance())
            transcript = await client.until(UserTranscript)
            assert transcript.user_transcription_event.event_id == 2
            reply = await client.until(AgentResponse)
            assert reply.agent_response_event.event_id == 2
            assert (await client.until(AudioEvent)).audio_event.event_id == 2
            await client.until(Ping)
            conv = sim.conversations[0]
            assert conv.greeting == cfg.first_message
            kinds = {kind for kind, _ in conv.sent}
            assert kinds <= set(DEFAULT_CLIENT_EVENTS) | {"agent_tool_response", "client_tool_call"}
            assert {"tentative_user_transcript", "user_transcript", "agent_response", "audio", "ping"} <= kinds
            ping_ids = [event_id for kind, event_id in conv.sent if kind == "ping"]
            assert ping_ids[:2] == [1, 2], "pings count on their own"
            tentative = [e.tentative_user_transcription_event for e in client.of(TentativeUserTranscript)]
            assert [t.user_transcript for t in tentative][:2] == ["where", "where is"]


async def test_client_events_override_is_honoured() -> None:
    events = ["conversation_initiation_metadata", "agent_response", "vad_score", "audio"]
    override = ConversationConfigOverride(conversation=ConversationOverride(client_events=events))
    with trio.fail_after(TIMEOUT):
        async with (
            open_simulator(real_config(first_message="", tool_call=None)) as sim,
            open_websocket_url(sim.signed_url()) as ws,
        ):
            client = Client(ws)
            await client.send(ConversationInitiationClientData(conversation_config_override=override))
            await client.until(ConversationInitiationMetadata)
            await client.send_audio(utterance())
            await client.until(AudioEvent)
            conv = sim.conversations[0]
            assert conv.client_events == frozenset(events)
            assert client.of(VadScore) and max(e.vad_score_event.vad_score for e in client.of(VadScore)) > 0.8
            assert not client.of(UserTranscript) and not client.of(TentativeUserTranscript)
            assert {kind for kind, _ in conv.sent} <= set(events)


async def test_a_forbidden_override_is_refused_with_an_override_error_and_1008() -> None:
    override = ConversationConfigOverride(conversation=ConversationOverride(client_events=["audio", "vad_score"]))
    cfg = real_config(forbidden_overrides=("conversation.client_events",))
    with trio.fail_after(TIMEOUT):
        async with open_simulator(cfg) as sim:
            async with open_websocket_url(sim.signed_url()) as ws:
                await ws.send_message(
                    codec.encode(ConversationInitiationClientData(conversation_config_override=override))
                )
                error = decode_server_event(await ws.get_message())
                assert isinstance(error, ErrorEvent)
                assert (error.error_event.code, error.error_event.error_type) == (1008, "override_error")
                assert "client_events" in (error.error_event.message or "")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                reason = closed.value.reason
                assert reason is not None and reason.code == 1008 and "client_events" in (reason.reason or "")
            assert sim.conversations[0].close_code == 1008
            # an allowed override passes
            first = ConversationConfigOverride(agent=AgentOverride(first_message="Moin!"))
            async with open_websocket_url(sim.signed_url()) as ws:
                client = Client(ws)
                await client.send(ConversationInitiationClientData(conversation_config_override=first))
                assert (await client.until(AgentResponse)).agent_response_event.agent_response == "Moin!"


@pytest.mark.parametrize("when", ["before", "during", "after"])
async def test_goodbye_ends_the_call_with_end_call_and_closes_1000_after_the_goodbye(when: str) -> None:
    cfg = real_config(first_message="", transcripts=("thanks, goodbye!",), tool_call=None, end_call=when,
                      end_call_close_after=0.5)
    with trio.fail_after(TIMEOUT):
        async with open_simulator(cfg) as sim:
            async with open_websocket_url(sim.signed_url()) as ws:
                client = Client(ws)
                await client.send_audio(utterance())
                response = await client.until(AgentResponse)
                assert response.agent_response_event.agent_response == cfg.goodbye
                code = None
                try:
                    while True:
                        await client.next()
                except ConnectionClosed as exc:
                    code = exc.reason.code if exc.reason is not None else None
                kinds = [type(e) for e in client.events]
                end = kinds.index(AgentToolResponse)
                tool = client.events[end]
                assert isinstance(tool, AgentToolResponse)
                body = tool.agent_tool_response
                assert (body.tool_name, body.tool_type, body.is_error, body.event_id) == (
                    "end_call", "system", False, response.agent_response_event.event_id)
                audio_before = kinds[:end].count(AudioEvent)
                audio_after = kinds[end:].count(AudioEvent)
                assert {"before": audio_before == 0, "during": audio_before and audio_after,
                        "after": audio_after == 0}[when]
                assert code == 1000
            conv = sim.conversations[0]
            # the agent closes end_call_close_after once the goodbye has played in real time
            assert conv.ended_at is not None and len(conv.end_calls) == 1
            first_audio = conv.started_at  # lower bound; the goodbye plays reply_seconds
            assert conv.ended_at - first_audio >= cfg.reply_seconds + 0.5


async def test_client_messages_are_accepted_and_recorded_verbatim() -> None:
    data = {"type": "conversation_initiation_client_data", "user_id": "lobby-1",
            "source_info": {"source": "kioskd", "version": "0.1.0"}, "tool_mock_config": {"mocking_strategy": "none"}}
    with trio.fail_after(TIMEOUT):
        async with open_simulator(real_config()) as sim, open_websocket_url(sim.signed_url()) as ws:
            client = Client(ws)
            await ws.send_message(json.dumps(data))
            greeting = await client.until(AgentResponse)
            await client.send(Feedback(event_id=greeting.agent_response_event.event_id, score="like"))
            await client.send(Feedback(event_id=greeting.agent_response_event.event_id, score=None))
            await client.send(UserActivity())
            await client.send(ContextualUpdate(text="the door opened", context_id="door"))
            conv = sim.conversations[0]
            await sim.wait_for(lambda: len(conv.raw_messages) == 5)
            assert conv.open
            assert conv.client_data is not None and conv.client_data.user_id == "lobby-1"
            assert conv.client_data.source_info == SourceInfo("kioskd", "0.1.0")
            assert json.loads(conv.raw_messages[0][1]) == data, "fields the struct does not know are kept too"
            assert conv.feedback == [Feedback(1, "like"), Feedback(1, None)]
            assert len(conv.user_activity) == 1 and conv.contextual_updates == ["the door opened"]


async def test_text_only_conversation_streams_text_and_never_times_out_on_silence() -> None:
    override = ConversationConfigOverride(conversation=ConversationOverride(text_only=True))
    with trio.fail_after(TIMEOUT):
        async with (
            open_simulator(real_config(silence_timeout=0.3, tool_call=None)) as sim,
            open_websocket_url(sim.signed_url()) as ws,
        ):
            client = Client(ws)
            await client.send(ConversationInitiationClientData(conversation_config_override=override))
            await client.until(AgentResponse)  # the greeting, as text
            await client.send(UserMessage(text="what is on today?"))
            reply = await client.until(AgentResponse)
            parts: list[ChatResponsePartBody] = []
            while not parts or parts[-1].type != "stop":
                parts.append((await client.until(AgentChatResponsePart)).text_response_part)
            if parts[0].event_id != reply.agent_response_event.event_id:  # the greeting's parts came first
                parts = []
                while not parts or parts[-1].type != "stop":
                    parts.append((await client.until(AgentChatResponsePart)).text_response_part)
            assert parts[0].type == "start" and "".join(x.text for x in parts).strip() == sim.config.replies[0]
            await trio.sleep(0.5)
            assert sim.conversations[0].open and sim.conversations[0].text_only
            assert not client.of(AudioEvent)


async def test_silence_close_is_preceded_by_an_error_event_of_the_real_shape() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_simulator(real_config(silence_timeout=0.3, first_message="")) as sim,
            open_websocket_url(sim.signed_url()) as ws,
        ):
            client = Client(ws)
            error = await client.until(ErrorEvent)
            assert (error.error_event.code, error.error_event.error_type) == (1002, "transport_receive_timeout")
            assert error.error_event.message
            assert await close_code(ws) == 1002


async def test_legacy_switches_bring_back_the_old_behaviour() -> None:
    cfg = fast_config(**LEGACY, tool_call=None)
    with trio.fail_after(TIMEOUT):
        async with open_simulator(cfg) as sim, open_websocket_url(sim.signed_url()) as ws:
            client = Client(ws)
            await client.send_audio(utterance())
            await client.until(UserTranscript)
            await client.until(InternalTentativeAgentResponse)
            first, second = await client.until(AudioEvent), await client.until(AudioEvent)
            assert second.audio_event.event_id == first.audio_event.event_id + 1
            assert first.audio_event.alignment is None
            assert client.of(VadScore) and not client.of(TentativeUserTranscript)
            assert sim.conversations[0].greeting is None


def test_cli_secrets_come_from_env_or_files_never_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Arguments are visible to every local user in ps; the simulator's secrets are not arguments."""
    from kioskd.simulator.cli import API_KEY_ENV, KIOSK_TOKEN_ENV, build_parser, config_from_args

    for flag in ("--kiosk-token", "--api-key"):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args([flag, "Zq9-secret"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "ps" in err and "Zq9-secret" not in err
    monkeypatch.delenv(KIOSK_TOKEN_ENV, raising=False)
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    defaults = config_from_args(build_parser().parse_args([]))
    assert defaults.kiosk_token == SimulatorConfig().kiosk_token
    monkeypatch.setenv(KIOSK_TOKEN_ENV, "token-from-env")
    key_file = tmp_path / "key"
    key_file.write_text("key-from-file\n")
    config = config_from_args(build_parser().parse_args(["--api-key-file", str(key_file)]))
    assert (config.kiosk_token, config.api_key) == ("token-from-env", "key-from-file")
    with pytest.raises(SystemExit):
        config_from_args(build_parser().parse_args(["--kiosk-token-file", str(tmp_path / "missing")]))
    assert "cannot read" in capsys.readouterr().err


async def test_a_ping_while_the_agent_is_closing_does_not_crash_it(sim: Simulator) -> None:
    """trio-websocket answered a ping after its own Close frame: wsproto's LocalProtocolError
    (trio-websocket issue #184) took the whole agent server down. A raw wsproto client pings
    right after the agent's Close (here: a refused token) and only then answers it."""
    from urllib.parse import urlsplit

    import wsproto
    from wsproto.events import AcceptConnection, CloseConnection, Request

    url = urlsplit(sim.ws_base)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(url.hostname or "127.0.0.1", url.port or 0)
        client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        target = f"/v1/convai/conversation?agent_id={sim.config.agent_id}&token=not-a-token"
        await stream.send_all(client.send(Request(host=url.netloc, target=target)))
        closing = None
        while closing is None:
            client.receive_data(await stream.receive_some(65536))
            for event in client.events():
                if isinstance(event, CloseConnection):
                    closing = event
                else:
                    assert isinstance(event, AcceptConnection)
        assert closing.code == 1008
        # the agent is in LOCAL_CLOSING now; a masked ping frame, by hand (wsproto would refuse to send it)
        await stream.send_all(b"\x89\x84\x00\x00\x00\x00late")
        await trio.sleep(0.2)
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(client.send(closing.response()))
        await stream.aclose()
        # the agent still serves
        async with open_websocket_url(sim.signed_url()) as ws:
            assert isinstance(await Client(ws).next(), ConversationInitiationMetadata)

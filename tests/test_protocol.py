"""Every protocol message decodes and encodes; bad input gives ProtocolError and nothing else."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kioskd.protocol import (
    AgentResponse,
    AgentResponseCorrection,
    AudioEvent,
    ClientToolCall,
    ClientToolResult,
    ContextualUpdate,
    ConversationConfigOverride,
    ConversationInitiationClientData,
    ConversationInitiationMetadata,
    ErrorEvent,
    InternalTentativeAgentResponse,
    Interruption,
    Ping,
    Pong,
    ProtocolError,
    UnknownEvent,
    UserActivity,
    UserAudioChunk,
    UserMessage,
    UserTranscript,
    VadScore,
    decode_client_message,
    decode_server_event,
    encode,
)
from kioskd.protocol import AgentOverride, TtsOverride


def server(obj: dict) -> object:
    return decode_server_event(json.dumps(obj))


def test_conversation_initiation_metadata() -> None:
    ev = server({
        "type": "conversation_initiation_metadata",
        "conversation_initiation_metadata_event": {
            "conversation_id": "c1", "agent_output_audio_format": "pcm_44100", "user_input_audio_format": "ulaw_8000",
        },
    })
    assert isinstance(ev, ConversationInitiationMetadata)
    body = ev.conversation_initiation_metadata_event
    assert (body.conversation_id, body.agent_output_audio_format, body.user_input_audio_format) == (
        "c1", "pcm_44100", "ulaw_8000")


def test_metadata_defaults_to_pcm_16000() -> None:
    ev = server({"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {}})
    assert ev.conversation_initiation_metadata_event.agent_output_audio_format == "pcm_16000"


def test_user_transcript() -> None:
    ev = server({"type": "user_transcript", "user_transcription_event": {"user_transcript": "hello"}})
    assert isinstance(ev, UserTranscript) and ev.user_transcription_event.user_transcript == "hello"


def test_agent_response() -> None:
    ev = server({"type": "agent_response", "agent_response_event": {"agent_response": "Hi!"}})
    assert isinstance(ev, AgentResponse) and ev.agent_response_event.agent_response == "Hi!"


def test_agent_response_correction() -> None:
    ev = server({"type": "agent_response_correction", "agent_response_correction_event": {
        "original_agent_response": "a b c", "corrected_agent_response": "a b"}})
    assert isinstance(ev, AgentResponseCorrection)
    assert ev.agent_response_correction_event.corrected_agent_response == "a b"


def test_audio_decodes_base64_to_bytes() -> None:
    pcm = bytes(range(256)) * 4
    ev = server({"type": "audio", "audio_event": {"audio_base_64": base64.b64encode(pcm).decode(), "event_id": 7}})
    assert isinstance(ev, AudioEvent)
    assert ev.audio_event.audio_base_64 == pcm and ev.audio_event.event_id == 7


def test_interruption() -> None:
    ev = server({"type": "interruption", "interruption_event": {"event_id": 12}})
    assert isinstance(ev, Interruption) and ev.interruption_event.event_id == 12


@pytest.mark.parametrize("ping_ms", [None, 42])
def test_ping_with_and_without_ping_ms(ping_ms: int | None) -> None:
    ev = server({"type": "ping", "ping_event": {"event_id": 3, "ping_ms": ping_ms}})
    assert isinstance(ev, Ping) and ev.ping_event.event_id == 3 and ev.ping_event.ping_ms == ping_ms


def test_client_tool_call() -> None:
    ev = server({"type": "client_tool_call", "client_tool_call": {
        "tool_name": "kiosk_info", "tool_call_id": "t1", "parameters": {"a": 1, "b": [1, 2]}}})
    assert isinstance(ev, ClientToolCall)
    assert ev.client_tool_call.parameters == {"a": 1, "b": [1, 2]}


def test_contextual_update_both_ways() -> None:
    ev = server({"type": "contextual_update", "text": "visitor is a child"})
    assert ev == ContextualUpdate(text="visitor is a child")
    assert json.loads(encode(ev)) == {"type": "contextual_update", "text": "visitor is a child"}
    assert decode_client_message(encode(ev)) == ev


def test_vad_score() -> None:
    ev = server({"type": "vad_score", "vad_score_event": {"vad_score": 0.75}})
    assert isinstance(ev, VadScore) and ev.vad_score_event.vad_score == 0.75


def test_internal_tentative_agent_response() -> None:
    ev = server({"type": "internal_tentative_agent_response",
                 "tentative_agent_response_internal_event": {"tentative_agent_response": "Let me"}})
    assert isinstance(ev, InternalTentativeAgentResponse)


def test_error_event() -> None:
    ev = server({"type": "error", "error_event": {"code": 1000, "message": "too long",
                                                   "error_type": "max_duration_exceeded", "extra": 1}})
    assert isinstance(ev, ErrorEvent) and ev.error_event.error_type == "max_duration_exceeded"


def test_unknown_event_type_is_a_value_not_an_error() -> None:
    ev = server({"type": "agent_tool_response", "whatever": {"x": 1}})
    assert isinstance(ev, UnknownEvent) and ev.type == "agent_tool_response"


def test_unknown_fields_are_ignored() -> None:
    ev = server({"type": "ping", "ping_event": {"event_id": 1}, "new_field": True})
    assert isinstance(ev, Ping)


@pytest.mark.parametrize("data", [
    "not json",
    "[1, 2]",
    '{"no_type": 1}',
    '{"type": 5}',
    '{"type": "ping", "ping_event": {"event_id": "one"}}',
    '{"type": "audio", "audio_event": {"audio_base_64": "%%%not base64", "event_id": 1}}',
    '{"type": "agent_response", "agent_response_event": {}}',
    b"\xff\xfe",
])
def test_malformed_messages_raise_protocol_error(data: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_server_event(data)


def test_user_audio_chunk_has_no_type_and_is_base64() -> None:
    text = encode(UserAudioChunk(user_audio_chunk=b"\x01\x02\x03"))
    assert json.loads(text) == {"user_audio_chunk": base64.b64encode(b"\x01\x02\x03").decode()}
    assert decode_client_message(text) == UserAudioChunk(user_audio_chunk=b"\x01\x02\x03")


def test_pong() -> None:
    assert json.loads(encode(Pong(event_id=9))) == {"type": "pong", "event_id": 9}


def test_conversation_initiation_client_data() -> None:
    msg = ConversationInitiationClientData(
        conversation_config_override=ConversationConfigOverride(
            agent=AgentOverride(first_message="Hello", language="de"), tts=TtsOverride(voice_id="v1")),
        dynamic_variables={"kiosk_id": "lobby-1", "floor": 2, "open": True},
    )
    obj = json.loads(encode(msg))
    assert obj == {
        "type": "conversation_initiation_client_data",
        "conversation_config_override": {"agent": {"first_message": "Hello", "language": "de"},
                                         "tts": {"voice_id": "v1"}},
        "dynamic_variables": {"kiosk_id": "lobby-1", "floor": 2, "open": True},
    }
    assert decode_client_message(encode(msg)) == msg


def test_client_tool_result_always_carries_is_error() -> None:
    assert json.loads(encode(ClientToolResult("t1", "ok", False))) == {
        "type": "client_tool_result", "tool_call_id": "t1", "result": "ok", "is_error": False}
    assert json.loads(encode(ClientToolResult("t2", "no such tool", True)))["is_error"] is True


def test_user_message_and_activity() -> None:
    assert json.loads(encode(UserMessage(text="hi"))) == {"type": "user_message", "text": "hi"}
    assert json.loads(encode(UserActivity())) == {"type": "user_activity"}
    assert decode_client_message('{"type": "user_activity"}') == UserActivity()


def test_bad_client_message_raises_protocol_error() -> None:
    for data in ('{"type": "pong"}', '{"user_audio_chunk": "***"}', "{", '{"type": "nope"}'):
        with pytest.raises(ProtocolError):
            decode_client_message(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
event_types = st.sampled_from([
    "conversation_initiation_metadata", "user_transcript", "agent_response", "agent_response_correction",
    "audio", "interruption", "ping", "client_tool_call", "contextual_update", "vad_score",
    "internal_tentative_agent_response", "error", "unknown_type",
])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    try:
        decode_server_event(data)
    except ProtocolError:
        pass
    try:
        decode_client_message(data)
    except ProtocolError:
        pass


@settings(max_examples=400, deadline=None)
@given(event_types, st.dictionaries(st.text(max_size=30), json_values, max_size=4))
def test_arbitrary_shaped_events_raise_only_protocol_error(kind: str, fields: dict) -> None:
    fields["type"] = kind
    try:
        decode_server_event(json.dumps(fields))
    except ProtocolError:
        pass

"""Every protocol message decodes and encodes; bad input gives ProtocolError and nothing else."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kioskd.protocol.client_messages import (
    AgentOverride,
    ClientToolResult,
    ConversationConfigOverride,
    ConversationInitiationClientData,
    ConversationOverride,
    Feedback,
    Pong,
    SourceInfo,
    TtsOverride,
    UserActivity,
    UserAudioChunk,
    UserMessage,
)
from kioskd.protocol.codec import ProtocolError, decode_client_message, decode_server_event, encode, tool_result_text
from kioskd.protocol.common import ContextualUpdate
from kioskd.protocol.server_events import (
    SCHEMA_EVENT_TYPES,
    AgentChatResponsePart,
    AgentResponse,
    AgentResponseCorrection,
    AgentToolRequest,
    AgentToolResponse,
    AgentToolResponseFullPayload,
    AudioEvent,
    ClientToolCall,
    ConversationInitiationMetadata,
    ErrorEvent,
    InternalTentativeAgentResponse,
    Interruption,
    McpToolCall,
    Ping,
    ServerEvent,
    TentativeUserTranscript,
    UnknownEvent,
    UserTranscript,
    VadScore,
)


def server(obj: dict[str, Any]) -> ServerEvent | UnknownEvent:
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
    assert isinstance(ev, ConversationInitiationMetadata)
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


@pytest.mark.parametrize(("ping_ms", "rtt"), [(None, None), (42, 42.0), (41.5, 41.5), ("soon", None), ([1], None)])
def test_ping_is_readable_whatever_ping_ms_holds(ping_ms: object, rtt: float | None) -> None:
    ev = server({"type": "ping", "ping_event": {"event_id": 3, "ping_ms": ping_ms}})
    assert isinstance(ev, Ping) and ev.ping_event.event_id == 3 and ev.ping_event.rtt_ms() == rtt


@pytest.mark.parametrize("event_id", [3, 3.0, "3"])
def test_ping_event_id_may_come_as_a_whole_float_or_a_numeric_string(event_id: object) -> None:
    ev = server({"type": "ping", "ping_event": {"event_id": event_id}})
    assert isinstance(ev, Ping) and ev.ping_event.event_id == 3


def test_client_tool_call() -> None:
    ev = server({"type": "client_tool_call", "client_tool_call": {
        "tool_name": "kiosk_info", "tool_call_id": "t1", "parameters": {"a": 1, "b": [1, 2], "c": None},
        "event_id": 4}})
    assert isinstance(ev, ClientToolCall)
    assert ev.client_tool_call.parameters == {"a": 1, "b": [1, 2], "c": None}
    assert ev.client_tool_call.event_id == 4


@pytest.mark.parametrize("body", [
    {"tool_name": "kiosk_info", "tool_call_id": "t1", "parameters": None},
    {"tool_name": "kiosk_info", "tool_call_id": "t1"},
    {"tool_name": "kiosk_info", "tool_call_id": "t1", "parameters": None, "event_id": None},
])
def test_client_tool_call_with_null_or_missing_parameters(body: dict[str, Any]) -> None:
    ev = server({"type": "client_tool_call", "client_tool_call": body})
    assert isinstance(ev, ClientToolCall)
    assert ev.client_tool_call.parameters == {} and ev.client_tool_call.tool_call_id == "t1"


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
    assert ev.error_event.describe() == "code 1000 max_duration_exceeded: too long"


@pytest.mark.parametrize(("body", "words"), [
    ({"code": 1008}, "code 1008"),
    ({"code": 1008, "message": None, "error_type": None, "reason": None, "debug_message": None, "details": None},
     "code 1008"),
    ({"code": 1008, "message": None, "error_type": "override_error", "reason": "Override for field 'client_events'"
      " is not allowed by config.", "debug_message": "conversation.client_events", "details": {"field": "x"}},
     "code 1008 override_error: Override for field 'client_events' is not allowed by config."
     " (debug: conversation.client_events; details: {'field': 'x'})"),
    ({"code": 1002.0, "message": "no input", "reason": "timeout"}, "code 1002: no input (reason: timeout)"),
    ({}, "an error"),
])
def test_error_event_with_only_code_or_nulls_is_read_and_described(body: dict[str, Any], words: str) -> None:
    ev = server({"type": "error", "error_event": body})
    assert isinstance(ev, ErrorEvent)
    assert ev.error_event.describe() == words


def test_unknown_event_type_is_a_value_not_an_error() -> None:
    ev = server({"type": "context_usage", "context_usage_event": {"event_id": 1, "model": "x"}})
    assert isinstance(ev, UnknownEvent) and ev.type == "context_usage" and ev.type in SCHEMA_EVENT_TYPES
    ev = server({"type": "brand_new_event", "whatever": {"x": 1}})
    assert isinstance(ev, UnknownEvent) and ev.type not in SCHEMA_EVENT_TYPES


def test_every_event_a_kiosk_uses_decodes_with_its_event_id() -> None:
    cases = [
        (
            {"type": "user_transcript", "user_transcription_event": {"user_transcript": "hi", "event_id": 5}},
            UserTranscript,
            lambda e: e.user_transcription_event.event_id,
        ),
        (
            {
                "type": "tentative_user_transcript",
                "tentative_user_transcription_event": {"user_transcript": "h", "event_id": 5},
            },
            TentativeUserTranscript,
            lambda e: e.tentative_user_transcription_event.event_id,
        ),
        (
            {"type": "agent_response", "agent_response_event": {"agent_response": "a", "event_id": 6}},
            AgentResponse,
            lambda e: e.agent_response_event.event_id,
        ),
        (
            {
                "type": "agent_response_correction",
                "agent_response_correction_event": {
                    "original_agent_response": "a b",
                    "corrected_agent_response": "a",
                    "event_id": 6,
                },
            },
            AgentResponseCorrection,
            lambda e: e.agent_response_correction_event.event_id,
        ),
        (
            {"type": "agent_chat_response_part", "text_response_part": {"text": "He", "type": "delta", "event_id": 6}},
            AgentChatResponsePart,
            lambda e: e.text_response_part.event_id,
        ),
        (
            {
                "type": "agent_tool_request",
                "agent_tool_request": {
                    "tool_name": "end_call",
                    "tool_call_id": "c",
                    "tool_type": "system",
                    "event_id": 6,
                },
            },
            AgentToolRequest,
            lambda e: e.agent_tool_request.event_id,
        ),
        (
            {
                "type": "agent_tool_response",
                "agent_tool_response": {
                    "tool_name": "end_call",
                    "tool_call_id": "c",
                    "tool_type": "system",
                    "is_error": False,
                    "is_called": True,
                    "event_id": 6,
                },
            },
            AgentToolResponse,
            lambda e: e.agent_tool_response.event_id,
        ),
        (
            {
                "type": "agent_tool_response_full_payload",
                "agent_tool_response_full_payload": {
                    "tool_name": "lookup",
                    "tool_call_id": "c",
                    "tool_type": "webhook",
                    "is_error": False,
                    "is_called": True,
                    "event_id": 6,
                    "is_blocked": False,
                    "full_tool_result": '{"a": 1}',
                    "truncated": False,
                },
            },
            AgentToolResponseFullPayload,
            lambda e: e.agent_tool_response_full_payload.event_id,
        ),
        (
            {
                "type": "client_tool_call",
                "client_tool_call": {"tool_name": "t", "tool_call_id": "c", "parameters": {}, "event_id": 6},
            },
            ClientToolCall,
            lambda e: e.client_tool_call.event_id,
        ),
        (
            {"type": "audio", "audio_event": {"audio_base_64": "AAAA", "event_id": 6}},
            AudioEvent,
            lambda e: e.audio_event.event_id,
        ),
        (
            {"type": "interruption", "interruption_event": {"event_id": 6}},
            Interruption,
            lambda e: e.interruption_event.event_id,
        ),
    ]
    for obj, kind, event_id in cases:
        ev = server(obj)
        assert isinstance(ev, kind), obj
        assert event_id(ev) == obj[next(k for k in obj if k != "type")]["event_id"]
        assert json.loads(encode(ev)) == obj, "encodes back to the same JSON"


def test_mcp_tool_call_in_each_state() -> None:
    base = {"service_id": "s", "tool_call_id": "c", "tool_name": "search", "parameters": {"q": "x"},
            "timestamp": "2026-01-01T00:00:00Z", "tool_description": None}
    for extra in ({"state": "loading"}, {"state": "awaiting_approval", "approval_timeout_secs": 300},
                  {"state": "success", "result": [{"type": "text", "text": "ok"}]},
                  {"state": "failure", "error_message": "boom"}):
        ev = server({"type": "mcp_tool_call", "mcp_tool_call": {**base, **extra}})
        assert isinstance(ev, McpToolCall) and ev.mcp_tool_call.state == extra["state"]
        assert ev.mcp_tool_call.parameters == {"q": "x"}


def test_audio_with_alignment_and_null_alignment() -> None:
    ev = server({"type": "audio", "audio_event": {"audio_base_64": "AAAA", "event_id": 2, "alignment": {
        "chars": ["H", "i"], "char_start_times_ms": [0, 80.5], "char_durations_ms": [80, 90]}}})
    assert isinstance(ev, AudioEvent) and ev.audio_event.alignment is not None
    assert ev.audio_event.alignment.chars == ["H", "i"]
    assert ev.audio_event.alignment.char_start_times_ms == [0, 80.5]
    ev = server({"type": "audio", "audio_event": {"audio_base_64": "AAAA", "event_id": 2.0, "alignment": None}})
    assert isinstance(ev, AudioEvent) and ev.audio_event.alignment is None and ev.audio_event.event_id == 2
    assert "alignment" not in json.loads(encode(ev))["audio_event"], "no alignment key when there is none"


def test_null_optional_fields_read_as_absent() -> None:
    ev = server({"type": "user_transcript", "user_transcription_event": {"user_transcript": None, "event_id": 3}})
    assert isinstance(ev, UserTranscript) and ev.user_transcription_event.user_transcript == ""
    ev = server({"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {
        "conversation_id": "c", "agent_output_audio_format": None, "user_input_audio_format": "pcm_8000"}})
    assert isinstance(ev, ConversationInitiationMetadata)
    assert ev.conversation_initiation_metadata_event.agent_output_audio_format == "pcm_16000"
    ev = server({"type": "vad_score", "vad_score_event": {"vad_score": 1}})
    assert isinstance(ev, VadScore) and ev.vad_score_event.vad_score == 1.0


def test_unknown_fields_are_ignored() -> None:
    ev = server({"type": "ping", "ping_event": {"event_id": 1}, "new_field": True})
    assert isinstance(ev, Ping)


@pytest.mark.parametrize("data", [
    "not json",
    "[1, 2]",
    '{"no_type": 1}',
    '{"type": 5}',
    '{"type": "ping", "ping_event": {"event_id": "one"}}',
    '{"type": "ping", "ping_event": {"event_id": 1.5}}',
    '{"type": "ping", "ping_event": {"ping_ms": 3}}',
    '{"type": "audio", "audio_event": {"audio_base_64": "AAAA"}}',
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


def test_client_data_carries_user_id_source_info_and_the_conversation_override() -> None:
    msg = ConversationInitiationClientData(
        conversation_config_override=ConversationConfigOverride(
            conversation=ConversationOverride(client_events=["audio", "vad_score"], text_only=False),
            tts=TtsOverride(speed=1.1)),
        user_id="lobby-1",
        source_info=SourceInfo(source="kioskd", version="0.1.0"),
    )
    obj = json.loads(encode(msg))
    assert obj["user_id"] == "lobby-1" and obj["source_info"] == {"source": "kioskd", "version": "0.1.0"}
    assert obj["conversation_config_override"] == {
        "tts": {"speed": 1.1}, "conversation": {"text_only": False, "client_events": ["audio", "vad_score"]}}
    assert decode_client_message(encode(msg)) == msg


def test_client_data_as_the_official_clients_send_it() -> None:
    """The Python SDK's initiation message (empty tables, source_info) and nulls where the schema allows them."""
    python_sdk = {"type": "conversation_initiation_client_data", "custom_llm_extra_body": {"x": [1]},
                  "conversation_config_override": {"conversation": {"text_only": True}}, "dynamic_variables": {},
                  "source_info": {"source": "python_sdk", "version": "2.78.0"}, "user_id": "u1"}
    msg = decode_client_message(json.dumps(python_sdk))
    assert isinstance(msg, ConversationInitiationClientData)
    assert msg.user_id == "u1" and msg.source_info == SourceInfo("python_sdk", "2.78.0")
    assert msg.custom_llm_extra_body == {"x": [1]}
    nulls = {
        "type": "conversation_initiation_client_data",
        "user_id": None,
        "conversation_config_override": {"agent": {"first_message": None}, "conversation": {"client_events": None}},
    }
    msg = decode_client_message(json.dumps(nulls))
    assert isinstance(msg, ConversationInitiationClientData) and msg.user_id is None


def test_feedback_keeps_a_null_score() -> None:
    assert json.loads(encode(Feedback(event_id=4, score="like"))) == {
        "type": "feedback",
        "event_id": 4,
        "score": "like",
    }
    assert json.loads(encode(Feedback(event_id=4, score=None))) == {"type": "feedback", "event_id": 4, "score": None}
    assert decode_client_message('{"type": "feedback", "event_id": 4, "score": null}') == Feedback(4, None)
    with pytest.raises(ProtocolError):
        decode_client_message('{"type": "feedback", "event_id": 4, "score": "meh"}')


def test_contextual_update_and_user_message_optional_fields() -> None:
    assert json.loads(encode(ContextualUpdate(text="door open", context_id="door"))) == {
        "type": "contextual_update", "text": "door open", "context_id": "door"}
    assert decode_client_message('{"type": "user_message", "text": null}') == UserMessage(text=None)


@pytest.mark.parametrize(("value", "text"), [("ok", "ok"), (3, "3"), ({"a": [1]}, '{"a":[1]}'), (None, "null"),
                                              (True, "true"), (object, str(object))])
def test_tool_results_are_strings(value: object, text: str) -> None:
    assert tool_result_text(value) == text


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
    "internal_tentative_agent_response", "error", "unknown_type", "tentative_user_transcript",
    "agent_chat_response_part", "agent_tool_request", "agent_tool_response", "agent_tool_response_full_payload",
    "mcp_tool_call",
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
def test_arbitrary_shaped_events_raise_only_protocol_error(kind: str, fields: dict[str, Any]) -> None:
    fields["type"] = kind
    try:
        decode_server_event(json.dumps(fields))
    except ProtocolError:
        pass

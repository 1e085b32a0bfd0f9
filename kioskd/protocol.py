"""Every message of the Conversational AI WebSocket protocol, typed, with decode/encode.

No I/O here: bytes or text in, typed values out, and back. Decoding uses msgspec
tagged unions, so a message is parsed once, straight into its struct, with
``audio_base_64`` decoded to ``bytes`` on the way (no second pass in Python).

``decode_server_event`` never raises anything but :class:`ProtocolError`; an event
type this module does not know decodes to :class:`UnknownEvent` so callers can log
and skip it (the service adds types over time).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = [
    "AgentResponse",
    "AgentResponseCorrection",
    "AudioEvent",
    "ClientMessage",
    "ClientToolCall",
    "ClientToolResult",
    "ContextualUpdate",
    "ConversationConfigOverride",
    "ConversationInitiationClientData",
    "ConversationInitiationMetadata",
    "ErrorEvent",
    "InternalTentativeAgentResponse",
    "Interruption",
    "Ping",
    "Pong",
    "ProtocolError",
    "ServerEvent",
    "UnknownEvent",
    "UserActivity",
    "UserAudioChunk",
    "UserMessage",
    "UserTranscript",
    "VadScore",
    "decode_client_message",
    "decode_server_event",
    "encode",
]


class ProtocolError(ValueError):
    """A message that is not valid protocol: bad JSON, a wrong field type, bad base64."""


class _Msg(msgspec.Struct, tag_field="type", omit_defaults=True):
    """Base of every message that carries a ``type`` field."""


# --------------------------------------------------------------------------- server → client


class InitiationMetadataBody(msgspec.Struct):
    conversation_id: str = ""
    agent_output_audio_format: str = "pcm_16000"
    user_input_audio_format: str = "pcm_16000"


class ConversationInitiationMetadata(_Msg, tag="conversation_initiation_metadata"):
    conversation_initiation_metadata_event: InitiationMetadataBody = msgspec.field(
        default_factory=InitiationMetadataBody
    )


class UserTranscriptBody(msgspec.Struct):
    user_transcript: str = ""


class UserTranscript(_Msg, tag="user_transcript"):
    user_transcription_event: UserTranscriptBody = msgspec.field(default_factory=UserTranscriptBody)


class AgentResponseBody(msgspec.Struct):
    agent_response: str


class AgentResponse(_Msg, tag="agent_response"):
    agent_response_event: AgentResponseBody


class AgentResponseCorrectionBody(msgspec.Struct):
    original_agent_response: str
    corrected_agent_response: str


class AgentResponseCorrection(_Msg, tag="agent_response_correction"):
    agent_response_correction_event: AgentResponseCorrectionBody


class AudioBody(msgspec.Struct):
    audio_base_64: bytes = b""
    event_id: int = 0


class AudioEvent(_Msg, tag="audio"):
    audio_event: AudioBody = msgspec.field(default_factory=AudioBody)


class InterruptionBody(msgspec.Struct):
    event_id: int = 0


class Interruption(_Msg, tag="interruption"):
    interruption_event: InterruptionBody = msgspec.field(default_factory=InterruptionBody)


class PingBody(msgspec.Struct):
    event_id: int = 0
    ping_ms: int | None = None


class Ping(_Msg, tag="ping"):
    ping_event: PingBody = msgspec.field(default_factory=PingBody)


class ClientToolCallBody(msgspec.Struct):
    tool_name: str = ""
    tool_call_id: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class ClientToolCall(_Msg, tag="client_tool_call"):
    client_tool_call: ClientToolCallBody = msgspec.field(default_factory=ClientToolCallBody)


class ContextualUpdate(_Msg, tag="contextual_update"):
    """Sent by either side: free text the other side should know."""

    text: str


class VadScoreBody(msgspec.Struct):
    vad_score: float


class VadScore(_Msg, tag="vad_score"):
    vad_score_event: VadScoreBody


class TentativeAgentResponseBody(msgspec.Struct):
    tentative_agent_response: str


class InternalTentativeAgentResponse(_Msg, tag="internal_tentative_agent_response"):
    tentative_agent_response_internal_event: TentativeAgentResponseBody


class ErrorBody(msgspec.Struct):
    code: int | None = None
    message: str = ""
    error_type: str = ""


class ErrorEvent(_Msg, tag="error"):
    error_event: ErrorBody = msgspec.field(default_factory=ErrorBody)


class UnknownEvent(msgspec.Struct, frozen=True):
    """An event whose ``type`` this client does not know: log it and carry on."""

    type: str
    raw: dict[str, Any]


ServerEvent = (
    ConversationInitiationMetadata
    | UserTranscript
    | AgentResponse
    | AgentResponseCorrection
    | AudioEvent
    | Interruption
    | Ping
    | ClientToolCall
    | ContextualUpdate
    | VadScore
    | InternalTentativeAgentResponse
    | ErrorEvent
)

SERVER_EVENT_TYPES: Final[frozenset[str]] = frozenset(
    cls.__struct_config__.tag for cls in ServerEvent.__args__
)

# --------------------------------------------------------------------------- client → server


class UserAudioChunk(msgspec.Struct):
    """Microphone audio; the one message without a ``type`` field. Encoded as base64."""

    user_audio_chunk: bytes


class Pong(_Msg, tag="pong"):
    event_id: int


class AgentPromptOverride(msgspec.Struct, omit_defaults=True):
    prompt: str | None = None


class AgentOverride(msgspec.Struct, omit_defaults=True):
    prompt: AgentPromptOverride | None = None
    first_message: str | None = None
    language: str | None = None


class TtsOverride(msgspec.Struct, omit_defaults=True):
    voice_id: str | None = None


class ConversationConfigOverride(msgspec.Struct, omit_defaults=True):
    agent: AgentOverride | None = None
    tts: TtsOverride | None = None


class CustomLlmExtraBody(msgspec.Struct, omit_defaults=True):
    temperature: float | None = None
    max_tokens: int | None = None


DynamicValue = str | bool | int | float


class ConversationInitiationClientData(_Msg, tag="conversation_initiation_client_data"):
    conversation_config_override: ConversationConfigOverride | None = None
    custom_llm_extra_body: CustomLlmExtraBody | None = None
    dynamic_variables: dict[str, DynamicValue] | None = None


class ClientToolResult(_Msg, tag="client_tool_result"):
    tool_call_id: str
    result: str
    is_error: bool = False


class UserMessage(_Msg, tag="user_message"):
    text: str


class UserActivity(_Msg, tag="user_activity"):
    pass


ClientMessage = (
    UserAudioChunk
    | Pong
    | ConversationInitiationClientData
    | ClientToolResult
    | ContextualUpdate
    | UserMessage
    | UserActivity
)

_TaggedClientMessage = (
    Pong
    | ConversationInitiationClientData
    | ClientToolResult
    | ContextualUpdate
    | UserMessage
    | UserActivity
)

# --------------------------------------------------------------------------- codec

_server_decoder = msgspec.json.Decoder(ServerEvent)
_client_decoder = msgspec.json.Decoder(_TaggedClientMessage)
_audio_chunk_decoder = msgspec.json.Decoder(UserAudioChunk)
_envelope_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


def encode(message: ClientMessage | ServerEvent) -> str:
    """The JSON text of ``message``, ready for a WebSocket text frame."""
    if isinstance(message, ClientToolResult):
        # omit_defaults would drop ``is_error: false``; the agent expects the field.
        return _encoder.encode(
            {
                "type": "client_tool_result",
                "tool_call_id": message.tool_call_id,
                "result": message.result,
                "is_error": message.is_error,
            }
        ).decode()
    return _encoder.encode(message).decode()


def _envelope(data: str | bytes) -> dict[str, Any]:
    try:
        obj = _envelope_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    return obj


def decode_server_event(data: str | bytes) -> ServerEvent | UnknownEvent:
    """Parse one server message. Raises only :class:`ProtocolError`."""
    try:
        return _server_decoder.decode(data)
    except msgspec.DecodeError as exc:
        first_error = exc
    # Slow path, only for messages that did not fit: say precisely what was wrong.
    obj = _envelope(data)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("malformed message: no string `type` field")
    if kind not in SERVER_EVENT_TYPES:
        return UnknownEvent(type=kind, raw=obj)
    raise ProtocolError(f"malformed {kind} event: {first_error}")


def decode_client_message(data: str | bytes) -> ClientMessage:
    """Parse one client message (the simulator's side). Raises only :class:`ProtocolError`."""
    obj = _envelope(data)
    try:
        if "type" not in obj and "user_audio_chunk" in obj:
            return _audio_chunk_decoder.decode(data)
        return _client_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"invalid client message: {exc}") from None

"""Every message of the Conversational AI WebSocket protocol, typed, with decode/encode.

No I/O here: bytes or text in, typed values out, and back. Decoding uses msgspec
tagged unions, so a message is parsed once, straight into its struct, with
``audio_base_64`` decoded to ``bytes`` on the way (no second pass in Python).

The reference is the service's own AsyncAPI (``packages/types/schemas/agent.asyncapi.yaml``
in ``elevenlabs/packages``; see ../shared/NOTES.md "The real service today"). Decoding is
liberal where that schema is loose: a message that does not fit the strict types is read
again with every ``null`` taken as "absent" (ErrorData's ``message``/``error_type``,
``ping_ms``, ``parameters``, …) and whole-valued floats accepted for integers (``"event_id":
7.0``). ``ping_ms`` is kept as whatever number the server sent (:meth:`PingBody.rtt_ms`), so a
ping is answered whenever its ``event_id`` is readable.

``decode_server_event`` never raises anything but :class:`ProtocolError`; an event
type this module does not decode is an :class:`UnknownEvent` so callers can count and
skip it (the service adds types over time).
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

__all__ = [
    "DEFAULT_CLIENT_EVENTS",
    "SCHEMA_EVENT_TYPES",
    "AgentChatResponsePart",
    "AgentResponse",
    "AgentResponseCorrection",
    "AgentToolRequest",
    "AgentToolResponse",
    "AgentToolResponseFullPayload",
    "AudioEvent",
    "ClientMessage",
    "ClientToolCall",
    "ClientToolResult",
    "ContextualUpdate",
    "ConversationConfigOverride",
    "ConversationInitiationClientData",
    "ConversationInitiationMetadata",
    "ConversationOverride",
    "ErrorBody",
    "ErrorEvent",
    "Feedback",
    "InternalTentativeAgentResponse",
    "Interruption",
    "McpToolCall",
    "Ping",
    "Pong",
    "ProtocolError",
    "ServerEvent",
    "SourceInfo",
    "TentativeUserTranscript",
    "UnknownEvent",
    "UserActivity",
    "UserAudioChunk",
    "UserMessage",
    "UserTranscript",
    "VadScore",
    "decode_client_message",
    "decode_server_event",
    "encode",
    "tool_result_text",
]

#: ``ConversationConfigOverride.client_events`` when nobody sets it (the AsyncAPI's words):
#: no ``vad_score``, no ``agent_response_correction``, no internal events.
DEFAULT_CLIENT_EVENTS: Final[tuple[str, ...]] = (
    "audio", "interruption", "agent_response", "user_transcript", "tentative_user_transcript",
    "conversation_initiation_metadata", "ping",
)

#: Every server event type of the AsyncAPI (its ``ClientEvent`` enum, plus ``error``).
SCHEMA_EVENT_TYPES: Final[frozenset[str]] = frozenset({
    "audio", "agent_response", "agent_response_correction", "agent_chat_response_part",
    "agent_reasoning_response_part", "interruption", "user_transcript", "tentative_user_transcript",
    "conversation_initiation_metadata", "client_tool_call", "rich_content", "agent_tool_request",
    "agent_tool_response", "agent_tool_response_full_payload", "mcp_tool_call", "mcp_connection_status",
    "vad_score", "ping", "context_usage", "asr_initiation_metadata", "guardrail_triggered",
    "internal_turn_probability", "internal_tentative_agent_response", "agent_typing",
    "external_agent_connected", "external_agent_disconnected", "error",
})


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
    event_id: int = 0


class UserTranscript(_Msg, tag="user_transcript"):
    user_transcription_event: UserTranscriptBody = msgspec.field(default_factory=UserTranscriptBody)


class TentativeUserTranscript(_Msg, tag="tentative_user_transcript"):
    """What the visitor is saying so far (sent while they talk; the text may still change)."""

    tentative_user_transcription_event: UserTranscriptBody = msgspec.field(default_factory=UserTranscriptBody)


class AgentResponseBody(msgspec.Struct):
    agent_response: str
    event_id: int = 0


class AgentResponse(_Msg, tag="agent_response"):
    agent_response_event: AgentResponseBody


class AgentResponseCorrectionBody(msgspec.Struct):
    original_agent_response: str
    corrected_agent_response: str
    event_id: int = 0


class AgentResponseCorrection(_Msg, tag="agent_response_correction"):
    agent_response_correction_event: AgentResponseCorrectionBody


class ChatResponsePartBody(msgspec.Struct):
    text: str = ""
    type: str = "delta"  # start | delta | stop
    event_id: int = 0


class AgentChatResponsePart(_Msg, tag="agent_chat_response_part"):
    """Streaming text of the agent's reply (text-only conversations)."""

    text_response_part: ChatResponsePartBody = msgspec.field(default_factory=ChatResponsePartBody)


class Alignment(msgspec.Struct):
    """Which characters one audio chunk speaks, and when (milliseconds into the chunk)."""

    chars: list[str] = msgspec.field(default_factory=list)
    char_start_times_ms: list[float] = msgspec.field(default_factory=list)
    char_durations_ms: list[float] = msgspec.field(default_factory=list)


class AudioBody(msgspec.Struct, omit_defaults=True):
    event_id: int
    audio_base_64: bytes = b""
    #: omitted when there is none (the official Python client reads ``alignment`` if the key exists)
    alignment: Alignment | None = None


class AudioEvent(_Msg, tag="audio"):
    audio_event: AudioBody


class InterruptionBody(msgspec.Struct):
    event_id: int = 0


class Interruption(_Msg, tag="interruption"):
    interruption_event: InterruptionBody = msgspec.field(default_factory=InterruptionBody)


class PingBody(msgspec.Struct):
    event_id: int
    #: The server's round-trip estimate: integer or null in the schema; kept as sent.
    ping_ms: Any = None

    def rtt_ms(self) -> float | None:
        """``ping_ms`` as a number, or None when it is null or not a number."""
        value = self.ping_ms
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)


class Ping(_Msg, tag="ping"):
    ping_event: PingBody


class ClientToolCallBody(msgspec.Struct):
    tool_name: str = ""
    tool_call_id: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    event_id: int = 0


class ClientToolCall(_Msg, tag="client_tool_call"):
    client_tool_call: ClientToolCallBody = msgspec.field(default_factory=ClientToolCallBody)


class AgentToolRequestBody(msgspec.Struct):
    tool_name: str = ""
    tool_call_id: str = ""
    tool_type: str = ""
    event_id: int = 0


class AgentToolRequest(_Msg, tag="agent_tool_request"):
    """The agent is about to run a tool (client, webhook, system or MCP)."""

    agent_tool_request: AgentToolRequestBody = msgspec.field(default_factory=AgentToolRequestBody)


class AgentToolResponseBody(msgspec.Struct):
    tool_name: str = ""
    tool_call_id: str = ""
    tool_type: str = ""
    is_error: bool = False
    is_called: bool = False
    event_id: int = 0


class AgentToolResponse(_Msg, tag="agent_tool_response"):
    """A tool the agent ran; ``tool_name == "end_call"`` means the agent is ending the call."""

    agent_tool_response: AgentToolResponseBody = msgspec.field(default_factory=AgentToolResponseBody)


class AgentToolResponseFullPayloadBody(AgentToolResponseBody):
    is_blocked: bool = False
    full_tool_result: str = ""
    truncated: bool = False


class AgentToolResponseFullPayload(_Msg, tag="agent_tool_response_full_payload"):
    """Like :class:`AgentToolResponse`, with the tool's whole result."""

    agent_tool_response_full_payload: AgentToolResponseFullPayloadBody = msgspec.field(
        default_factory=AgentToolResponseFullPayloadBody
    )


class McpToolCallBody(msgspec.Struct):
    service_id: str = ""
    tool_call_id: str = ""
    tool_name: str = ""
    tool_description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    timestamp: str = ""
    state: str = ""  # loading | awaiting_approval | success | failure
    approval_timeout_secs: float | None = None
    result: list[Any] = msgspec.field(default_factory=list)
    error_message: str = ""


class McpToolCall(_Msg, tag="mcp_tool_call"):
    """A Model Context Protocol tool the agent runs on the server (the kiosk only reports it)."""

    mcp_tool_call: McpToolCallBody = msgspec.field(default_factory=McpToolCallBody)


class ContextualUpdate(_Msg, tag="contextual_update"):
    """Sent by either side: free text the other side should know (never interrupts)."""

    text: str
    context_id: str | None = None


class VadScoreBody(msgspec.Struct):
    vad_score: float


class VadScore(_Msg, tag="vad_score"):
    vad_score_event: VadScoreBody


class TentativeAgentResponseBody(msgspec.Struct):
    tentative_agent_response: str


class InternalTentativeAgentResponse(_Msg, tag="internal_tentative_agent_response"):
    tentative_agent_response_internal_event: TentativeAgentResponseBody


class ErrorBody(msgspec.Struct):
    """ErrorData: only ``code`` is required; every other field may be missing or null."""

    code: int | None = None
    message: str | None = None
    error_type: str | None = None
    reason: str | None = None
    debug_message: str | None = None
    details: Any = None

    def describe(self) -> str:
        """The error in words: ``code 1008 override_error: message (reason: …; debug: …)``."""
        head = " ".join(part for part in (f"code {self.code}" if self.code is not None else "", self.error_type or "")
                        if part) or "an error"
        text = self.message or self.reason or ""
        extras = [f"{key}: {value}" for key, value in (("reason", self.reason), ("debug", self.debug_message),
                                                       ("details", self.details))
                  if value and value != text]
        out = f"{head}: {text}" if text else head
        return f"{out} ({'; '.join(extras)})" if extras else out


class ErrorEvent(_Msg, tag="error"):
    error_event: ErrorBody = msgspec.field(default_factory=ErrorBody)


class UnknownEvent(msgspec.Struct, frozen=True):
    """An event whose ``type`` this client does not decode: count it and carry on."""

    type: str
    raw: dict[str, Any]


ServerEvent = (
    ConversationInitiationMetadata
    | UserTranscript
    | TentativeUserTranscript
    | AgentResponse
    | AgentResponseCorrection
    | AgentChatResponsePart
    | AudioEvent
    | Interruption
    | Ping
    | ClientToolCall
    | AgentToolRequest
    | AgentToolResponse
    | AgentToolResponseFullPayload
    | McpToolCall
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
    llm: str | None = None


class AgentOverride(msgspec.Struct, omit_defaults=True):
    prompt: AgentPromptOverride | None = None
    first_message: str | None = None
    language: str | None = None


class TtsOverride(msgspec.Struct, omit_defaults=True):
    voice_id: str | None = None
    speed: float | None = None
    stability: float | None = None
    similarity_boost: float | None = None


class ConversationOverride(msgspec.Struct, omit_defaults=True):
    """``text_only``, and which server events to send (``client_events``; see DEFAULT_CLIENT_EVENTS)."""

    text_only: bool | None = None
    client_events: list[str] | None = None


class ConversationConfigOverride(msgspec.Struct, omit_defaults=True):
    agent: AgentOverride | None = None
    tts: TtsOverride | None = None
    conversation: ConversationOverride | None = None


class SourceInfo(msgspec.Struct, omit_defaults=True):
    """Which client application this is (the official clients send their name and version)."""

    source: str | None = None
    version: str | None = None


DynamicValue = str | bool | int | float


class ConversationInitiationClientData(_Msg, tag="conversation_initiation_client_data"):
    conversation_config_override: ConversationConfigOverride | None = None
    custom_llm_extra_body: dict[str, Any] | None = None
    dynamic_variables: dict[str, DynamicValue] | None = None
    user_id: str | None = None
    source_info: SourceInfo | None = None


class ClientToolResult(_Msg, tag="client_tool_result"):
    tool_call_id: str
    result: str
    is_error: bool = False


class UserMessage(_Msg, tag="user_message"):
    """Text from the visitor (a touch screen); the agent answers it like speech."""

    text: str | None = None


class UserActivity(_Msg, tag="user_activity"):
    """The visitor is busy (e.g. typing): resets the agent's turn timer."""


class Feedback(_Msg, tag="feedback"):
    """The visitor's like/dislike of the agent's response ``event_id`` (None clears it)."""

    event_id: int
    score: Literal["like", "dislike"] | None


ClientMessage = (
    UserAudioChunk
    | Pong
    | ConversationInitiationClientData
    | ClientToolResult
    | ContextualUpdate
    | UserMessage
    | UserActivity
    | Feedback
)

_TaggedClientMessage = (
    Pong
    | ConversationInitiationClientData
    | ClientToolResult
    | ContextualUpdate
    | UserMessage
    | UserActivity
    | Feedback
)

# --------------------------------------------------------------------------- codec

_server_decoder = msgspec.json.Decoder(ServerEvent)
_liberal_server_decoder = msgspec.json.Decoder(ServerEvent, strict=False)
_client_decoder = msgspec.json.Decoder(_TaggedClientMessage)
_liberal_client_decoder = msgspec.json.Decoder(_TaggedClientMessage, strict=False)
_audio_chunk_decoder = msgspec.json.Decoder(UserAudioChunk)
_envelope_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()

#: Fields whose contents are free-form (kept as sent), and fields where null means something.
_VERBATIM: Final = frozenset({"parameters", "details", "dynamic_variables", "custom_llm_extra_body", "result"})
_NULL_MEANS_SOMETHING: Final = frozenset({"score"})


def _absent_nulls(obj: Any) -> Any:
    """``obj`` with every ``null`` field removed (null = absent), free-form fields untouched."""
    if isinstance(obj, dict):
        return {
            key: value if key in _VERBATIM else _absent_nulls(value)
            for key, value in obj.items()
            if value is not None or key in _NULL_MEANS_SOMETHING
        }
    if isinstance(obj, list):
        return [_absent_nulls(item) for item in obj]
    return obj


def tool_result_text(value: object) -> str:
    """A tool's result as the string the protocol wants (others JSON-encoded, as the JS client does)."""
    if isinstance(value, str):
        return value
    try:
        return _encoder.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return str(value)


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
    # Slow path, only for messages that did not fit: nulls as absent, floats for integers.
    obj = _envelope(data)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("malformed message: no string `type` field")
    if kind not in SERVER_EVENT_TYPES:
        return UnknownEvent(type=kind, raw=obj)
    try:
        return _liberal_server_decoder.decode(_encoder.encode(_absent_nulls(obj)))
    except msgspec.DecodeError:
        raise ProtocolError(f"malformed {kind} event: {first_error}") from None


def decode_client_message(data: str | bytes) -> ClientMessage:
    """Parse one client message (the simulator's side). Raises only :class:`ProtocolError`."""
    obj = _envelope(data)
    try:
        if "type" not in obj and "user_audio_chunk" in obj:
            return _audio_chunk_decoder.decode(data)
        try:
            return _client_decoder.decode(data)
        except msgspec.DecodeError as exc:
            first_error = exc
        try:
            return _liberal_client_decoder.decode(_encoder.encode(_absent_nulls(obj)))
        except msgspec.DecodeError:
            raise first_error from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"invalid client message: {exc}") from None

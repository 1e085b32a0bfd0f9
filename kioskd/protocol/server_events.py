"""The server → client half of the protocol: every event the agent sends, typed.

An event type this client does not decode is an :class:`UnknownEvent` (the service adds
types over time); :mod:`kioskd.protocol.codec` turns JSON text into these.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from kioskd.protocol.common import ContextualUpdate, TaggedMessage

__all__ = [
    "SCHEMA_EVENT_TYPES",
    "SERVER_EVENT_TYPES",
    "AgentChatResponsePart",
    "AgentResponse",
    "AgentResponseCorrection",
    "AgentToolRequest",
    "AgentToolResponse",
    "AgentToolResponseFullPayload",
    "AudioEvent",
    "ClientToolCall",
    "ConversationInitiationMetadata",
    "ErrorBody",
    "ErrorEvent",
    "InternalTentativeAgentResponse",
    "Interruption",
    "McpToolCall",
    "Ping",
    "ServerEvent",
    "TentativeUserTranscript",
    "UnknownEvent",
    "UserTranscript",
    "VadScore",
]

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


class InitiationMetadataBody(msgspec.Struct):
    conversation_id: str = ""
    agent_output_audio_format: str = "pcm_16000"
    user_input_audio_format: str = "pcm_16000"


class ConversationInitiationMetadata(TaggedMessage, tag="conversation_initiation_metadata"):
    conversation_initiation_metadata_event: InitiationMetadataBody = msgspec.field(
        default_factory=InitiationMetadataBody
    )


class UserTranscriptBody(msgspec.Struct):
    user_transcript: str = ""
    event_id: int = 0


class UserTranscript(TaggedMessage, tag="user_transcript"):
    user_transcription_event: UserTranscriptBody = msgspec.field(default_factory=UserTranscriptBody)


class TentativeUserTranscript(TaggedMessage, tag="tentative_user_transcript"):
    """What the visitor is saying so far (sent while they talk; the text may still change)."""

    tentative_user_transcription_event: UserTranscriptBody = msgspec.field(default_factory=UserTranscriptBody)


class AgentResponseBody(msgspec.Struct):
    agent_response: str
    event_id: int = 0


class AgentResponse(TaggedMessage, tag="agent_response"):
    agent_response_event: AgentResponseBody


class AgentResponseCorrectionBody(msgspec.Struct):
    original_agent_response: str
    corrected_agent_response: str
    event_id: int = 0


class AgentResponseCorrection(TaggedMessage, tag="agent_response_correction"):
    agent_response_correction_event: AgentResponseCorrectionBody


class ChatResponsePartBody(msgspec.Struct):
    text: str = ""
    type: str = "delta"  # start | delta | stop
    event_id: int = 0


class AgentChatResponsePart(TaggedMessage, tag="agent_chat_response_part"):
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


class AudioEvent(TaggedMessage, tag="audio"):
    audio_event: AudioBody


class InterruptionBody(msgspec.Struct):
    event_id: int = 0


class Interruption(TaggedMessage, tag="interruption"):
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


class Ping(TaggedMessage, tag="ping"):
    ping_event: PingBody


class ClientToolCallBody(msgspec.Struct):
    tool_name: str = ""
    tool_call_id: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    event_id: int = 0


class ClientToolCall(TaggedMessage, tag="client_tool_call"):
    client_tool_call: ClientToolCallBody = msgspec.field(default_factory=ClientToolCallBody)


class AgentToolRequestBody(msgspec.Struct):
    tool_name: str = ""
    tool_call_id: str = ""
    tool_type: str = ""
    event_id: int = 0


class AgentToolRequest(TaggedMessage, tag="agent_tool_request"):
    """The agent is about to run a tool (client, webhook, system or MCP)."""

    agent_tool_request: AgentToolRequestBody = msgspec.field(default_factory=AgentToolRequestBody)


class AgentToolResponseBody(msgspec.Struct):
    tool_name: str = ""
    tool_call_id: str = ""
    tool_type: str = ""
    is_error: bool = False
    is_called: bool = False
    event_id: int = 0


class AgentToolResponse(TaggedMessage, tag="agent_tool_response"):
    """A tool the agent ran; ``tool_name == "end_call"`` means the agent is ending the call."""

    agent_tool_response: AgentToolResponseBody = msgspec.field(default_factory=AgentToolResponseBody)


class AgentToolResponseFullPayloadBody(AgentToolResponseBody):
    is_blocked: bool = False
    full_tool_result: str = ""
    truncated: bool = False


class AgentToolResponseFullPayload(TaggedMessage, tag="agent_tool_response_full_payload"):
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


class McpToolCall(TaggedMessage, tag="mcp_tool_call"):
    """A Model Context Protocol tool the agent runs on the server (the kiosk only reports it)."""

    mcp_tool_call: McpToolCallBody = msgspec.field(default_factory=McpToolCallBody)


class VadScoreBody(msgspec.Struct):
    vad_score: float


class VadScore(TaggedMessage, tag="vad_score"):
    vad_score_event: VadScoreBody


class TentativeAgentResponseBody(msgspec.Struct):
    tentative_agent_response: str


class InternalTentativeAgentResponse(TaggedMessage, tag="internal_tentative_agent_response"):
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


class ErrorEvent(TaggedMessage, tag="error"):
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


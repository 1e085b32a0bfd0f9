"""The client → server half of the protocol: every message the kiosk sends, typed.

The simulator decodes these (:func:`kioskd.protocol.codec.decode_client_message`).
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

from kioskd.protocol.common import ContextualUpdate, TaggedMessage

__all__ = [
    "DEFAULT_CLIENT_EVENTS",
    "AgentOverride",
    "AgentPromptOverride",
    "ClientMessage",
    "ClientToolResult",
    "ConversationConfigOverride",
    "ConversationInitiationClientData",
    "ConversationOverride",
    "DynamicValue",
    "Feedback",
    "Pong",
    "SourceInfo",
    "TaggedClientMessage",
    "TtsOverride",
    "UserActivity",
    "UserAudioChunk",
    "UserMessage",
]

#: ``ConversationConfigOverride.client_events`` when nobody sets it (the AsyncAPI's words):
#: no ``vad_score``, no ``agent_response_correction``, no internal events.
DEFAULT_CLIENT_EVENTS: Final[tuple[str, ...]] = (
    "audio", "interruption", "agent_response", "user_transcript", "tentative_user_transcript",
    "conversation_initiation_metadata", "ping",
)


class UserAudioChunk(msgspec.Struct):
    """Microphone audio; the one message without a ``type`` field. Encoded as base64."""

    user_audio_chunk: bytes


class Pong(TaggedMessage, tag="pong"):
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

    def fields_set(self) -> list[str]:
        """Dotted names of the fields this override sets ("agent.first_message", "conversation.client_events", …)."""
        out = []
        for section in ("agent", "tts", "conversation"):
            value = getattr(self, section)
            if value is not None:
                out += [f"{section}.{name}" for name in value.__struct_fields__ if getattr(value, name) is not None]
        return out


class SourceInfo(msgspec.Struct, omit_defaults=True):
    """Which client application this is (the official clients send their name and version)."""

    source: str | None = None
    version: str | None = None


DynamicValue = str | bool | int | float


class ConversationInitiationClientData(TaggedMessage, tag="conversation_initiation_client_data"):
    conversation_config_override: ConversationConfigOverride | None = None
    custom_llm_extra_body: dict[str, Any] | None = None
    dynamic_variables: dict[str, DynamicValue] | None = None
    user_id: str | None = None
    source_info: SourceInfo | None = None


class ClientToolResult(TaggedMessage, tag="client_tool_result"):
    tool_call_id: str
    result: str
    is_error: bool = False


class UserMessage(TaggedMessage, tag="user_message"):
    """Text from the visitor (a touch screen); the agent answers it like speech."""

    text: str | None = None


class UserActivity(TaggedMessage, tag="user_activity"):
    """The visitor is busy (e.g. typing): resets the agent's turn timer."""


class Feedback(TaggedMessage, tag="feedback"):
    """The visitor's like/dislike of the agent's response ``event_id`` (None clears it)."""

    event_id: int
    score: Literal["like", "dislike"] | None


#: Every client message that carries a ``type`` field (all but :class:`UserAudioChunk`).
TaggedClientMessage = (
    Pong
    | ConversationInitiationClientData
    | ClientToolResult
    | ContextualUpdate
    | UserMessage
    | UserActivity
    | Feedback
)

#: Every message the kiosk sends.
ClientMessage = UserAudioChunk | TaggedClientMessage

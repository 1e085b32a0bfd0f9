"""``SimulatorConfig``: how the simulated agent and backend behave (defaults mirror the service)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from kioskd.audio.formats import AudioFormat
from kioskd.protocol.client_messages import DEFAULT_CLIENT_EVENTS
from kioskd.protocol.server_events import SCHEMA_EVENT_TYPES

__all__ = ["AGENT_CLIENT_EVENTS", "LEGACY", "SimulatorConfig"]

DEFAULT_AGENT_ID: Final = "agent_sim"
DEFAULT_KIOSK_TOKEN: Final = "sim-kiosk-token"
DEFAULT_API_KEY: Final = "sim-api-key"
DEFAULT_REPLY_TEXT: Final = "Hello! This is the simulated agent. How can I help you today?"
DEFAULT_FIRST_MESSAGE: Final = "Hi, welcome! What can I do for you?"
DEFAULT_GOODBYE: Final = "Goodbye, and have a lovely day!"
#: The server events the simulated agent is configured to send: the service's default
#: ``client_events`` (protocol.DEFAULT_CLIENT_EVENTS, from the AsyncAPI) plus the two tool
#: events an agent with client tools and the ``end_call`` system tool has enabled (without
#: ``client_tool_call`` a client tool could never run). No vad_score, no corrections, no
#: internal events. A kiosk's ``conversation.client_events`` override replaces the set.
AGENT_CLIENT_EVENTS: Final[tuple[str, ...]] = (*DEFAULT_CLIENT_EVENTS, "client_tool_call", "agent_tool_response")
#: The simulator's behaviour before it followed the AsyncAPI (issue 12), for tests that
#: rely on it: every event type, a fresh id per audio chunk shared with pings, no greeting,
#: no tentative transcripts, no alignment, no end_call, a bare 1002 on silence.
LEGACY: Final[dict[str, Any]] = dict(
    client_events=tuple(sorted(SCHEMA_EVENT_TYPES - {"error"})), event_ids="message", first_message="",
    tentative_ms=0, alignment=False, end_call=None, silence_error=False,
)
#: A signed URL may start a conversation for this long (the service's value).
SIGNED_URL_TTL: Final = 15 * 60.0


@dataclass
class SimulatorConfig:
    """Everything the simulator can be told; every field has the service's default."""

    host: str = "127.0.0.1"
    port: int = 0
    backend_port: int = 0
    agent_id: str = DEFAULT_AGENT_ID
    kiosk_token: str = DEFAULT_KIOSK_TOKEN
    api_key: str = DEFAULT_API_KEY
    #: False: a connection without a token is accepted (a public agent); a bad token still is not.
    require_token: bool = True
    token_ttl: float = SIGNED_URL_TTL
    input_format: str = "pcm_16000"
    output_format: str = "pcm_16000"
    #: How long the agent waits for ``conversation_initiation_client_data`` before its metadata.
    client_data_wait: float = 1.0
    ping_interval: float = 2.0
    vad_mode: int = 2
    #: Window of each vad_score (sent only when "vad_score" is among the client events).
    vad_score_ms: int = 100  # 0: no vad_score events
    #: The events this agent sends (see AGENT_CLIENT_EVENTS); "error" is always sent.
    client_events: tuple[str, ...] = AGENT_CLIENT_EVENTS
    #: Override fields the agent's security settings refuse ("conversation.client_events",
    #: "agent.first_message", …): such an override gets an ``override_error`` and a 1008 close.
    forbidden_overrides: tuple[str, ...] = ()
    #: "turn": one event id per turn (a user turn and the agent's reply to it share it; pings
    #: count apart), as the service does; "message": a fresh id per audio chunk, shared with pings.
    event_ids: Literal["turn", "message"] = "turn"
    #: The agent speaks first with this ("" = it waits for the visitor), unless overridden.
    first_message: str = DEFAULT_FIRST_MESSAGE
    #: A tentative_user_transcript every this many ms of visitor speech (0: none).
    tentative_ms: int = 300
    #: Character alignment on every audio event.
    alignment: bool = True
    #: A visitor turn containing one of these words ends the call: the agent says ``goodbye``
    #: and calls ``end_call`` (agent_tool_response) before, during or after saying it (None: never).
    goodbye_words: tuple[str, ...] = ("goodbye", "bye")
    goodbye: str = DEFAULT_GOODBYE
    end_call: Literal["before", "during", "after"] | None = "after"
    #: After the goodbye has played, the agent closes (1000) itself this much later.
    end_call_close_after: float = 3.0
    #: An ``error`` event (transport_receive_timeout) before the 1002 close on silence.
    silence_error: bool = True
    end_of_speech_ms: int = 600
    barge_in_ms: int = 200
    reply_seconds: float = 2.0
    reply_chunk_ms: int = 200
    #: Agent audio is sent this many times faster than real time.
    reply_speedup: float = 4.0
    replies: tuple[str, ...] = (DEFAULT_REPLY_TEXT,)
    #: Scripted transcripts, one per user turn; later turns get "(simulated transcript: N.N s of speech)".
    transcripts: tuple[str, ...] = ()
    #: (tool_name, parameters) sent after the first user turn; None: no tool call.
    tool_call: tuple[str, dict[str, Any]] | None = ("kiosk_info", {})
    silence_timeout: float = 60.0
    max_duration: float = 600.0
    max_message_size: int = 16 * 1024 * 1024
    extra_agent_ids: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        AudioFormat.parse(self.input_format)
        AudioFormat.parse(self.output_format)
        if not self.replies:
            raise ValueError("replies: at least one reply text is needed")
        unknown = set(self.client_events) - SCHEMA_EVENT_TYPES
        if unknown:
            raise ValueError(f"client_events: not in the AsyncAPI: {', '.join(sorted(unknown))}")

    @property
    def agent_ids(self) -> frozenset[str]:
        """Every agent id the simulator knows."""
        return frozenset((self.agent_id, *self.extra_agent_ids))

"""``SimulatorConfig``: how the simulated agent and backend behave (defaults mirror the service)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from kioskd.audio.formats import AudioFormat

__all__ = ["SimulatorConfig"]

DEFAULT_AGENT_ID: Final = "agent_sim"
DEFAULT_KIOSK_TOKEN: Final = "sim-kiosk-token"
DEFAULT_API_KEY: Final = "sim-api-key"
DEFAULT_REPLY_TEXT: Final = "Hello! This is the simulated agent. How can I help you today?"
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
    vad_score_ms: int = 100  # 0: no vad_score events
    end_of_speech_ms: int = 600
    barge_in_ms: int = 200
    reply_seconds: float = 2.0
    reply_chunk_ms: int = 200
    #: Agent audio is sent this many times faster than real time.
    reply_speedup: float = 4.0
    replies: tuple[str, ...] = (DEFAULT_REPLY_TEXT,)
    #: Scripted transcripts, one per user turn; later turns get "(simulated transcript: N.N s of speech)".
    transcripts: tuple[str, ...] = ()
    send_tentative: bool = True
    send_corrections: bool = True
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

    @property
    def agent_ids(self) -> frozenset[str]:
        """Every agent id the simulator knows."""
        return frozenset((self.agent_id, *self.extra_agent_ids))

"""What a :class:`~kioskd.conversation.Conversation` asks its driver to do, and how it ended.

Plain frozen values: :class:`Send`, :class:`OpenAudio`, :class:`Play`,
:class:`Interrupt`, :class:`Show`, :class:`StopMic` and :class:`End` (the :data:`Action` union), the
:class:`SessionOutcome` an end carries, and the :class:`SessionStats` counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kioskd.audio.formats import AudioFormat
from kioskd.protocol.client_messages import ClientMessage

__all__ = [
    "CLOSE_TIMEOUT",
    "Action",
    "End",
    "Interrupt",
    "OpenAudio",
    "Play",
    "Send",
    "SessionOutcome",
    "SessionStats",
    "Show",
    "StopMic",
]

#: Longest wait for our close handshake before the socket is simply dropped.
CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True)
class SessionOutcome:
    """How a conversation ended. ``resumable`` means a link fault the supervisor may recover from."""

    reason: str
    resumable: bool = False
    rejected: bool = False
    close_code: int | None = None
    conversation_id: str | None = None
    opened: bool = False
    transcript: list[str] = field(default_factory=list)


@dataclass
class SessionStats:
    """Counters for ``kioskd ctl status`` and the benchmarks."""

    pings: int = 0
    last_ping_ms: float | None = None
    audio_events: int = 0
    chunks_sent: int = 0
    interruptions: int = 0
    malformed: int = 0
    unknown: int = 0
    #: unknown (or not decoded) server event types, and how many of each
    unknown_types: dict[str, int] = field(default_factory=dict)
    tool_calls: int = 0
    congested_waits: int = 0


@dataclass(frozen=True)
class Send:
    """Send this message to the agent."""

    message: ClientMessage


@dataclass(frozen=True)
class OpenAudio:
    """The conversation is open: encode the microphone as ``input``, play ``output``, start sending."""

    input: AudioFormat
    output: AudioFormat


@dataclass(frozen=True)
class Play:
    """Queue agent audio for the speaker."""

    event_id: int
    audio: bytes


@dataclass(frozen=True)
class Interrupt:
    """The visitor barged in: silence agent audio older than ``event_id`` (that id and newer play)."""

    event_id: int


@dataclass(frozen=True)
class Show:
    """Put these fields on the status board (see :class:`kioskd.state.Status`)."""

    changes: dict[str, Any]


@dataclass(frozen=True)
class StopMic:
    """Stop sending the microphone (the agent is ending the call; its goodbye still plays)."""


@dataclass(frozen=True)
class End:
    """Stop the conversation: close the link with ``close_code``, waiting at most ``close_timeout``."""

    outcome: SessionOutcome
    close_code: int = 1000
    close_timeout: float = CLOSE_TIMEOUT


Action = Send | OpenAudio | Play | Interrupt | Show | StopMic | End

"""What the simulator saw, for tests to inspect, and a change signal to await it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import trio

from kioskd.protocol.client_messages import ClientMessage, ClientToolResult, ConversationInitiationClientData, Feedback

__all__ = ["ChangeSignal", "Conversation", "PongRecord", "TurnRecord"]


class ChangeSignal:
    """Wakes every waiter whenever a record changes, so tests await conditions instead of sleeping."""

    def __init__(self) -> None:
        self._lot = trio.lowlevel.ParkingLot()

    def notify(self) -> None:
        """Something changed: wake all waiters (sync, callable from any Trio task)."""
        self._lot.unpark_all()

    async def wait_for(self, predicate: Callable[[], object]) -> None:
        """Return as soon as ``predicate()`` is truthy (checked after every change)."""
        while not predicate():
            await self._lot.park()


@dataclass(frozen=True)
class PongRecord:
    """One pong: its event id, when it arrived, and the round trip (None for an unknown id)."""

    event_id: int
    t: float
    rtt: float | None


@dataclass(frozen=True)
class TurnRecord:
    """One user turn the agent answered."""

    t: float
    transcript: str | None
    speech_ms: int
    reply: str


@dataclass
class Conversation:
    """Everything one conversation saw and did."""

    conversation_id: str
    agent_id: str
    input_format: str
    output_format: str
    started_at: float
    client_data: ConversationInitiationClientData | None = None
    messages: list[tuple[float, ClientMessage]] = field(default_factory=list)
    #: The JSON text of every message but audio, exactly as received (nothing the client sent is lost).
    raw_messages: list[tuple[float, str]] = field(default_factory=list)
    sent_types: list[str] = field(default_factory=list)
    #: (type, event_id or None) of every event sent, in order.
    sent: list[tuple[str, int | None]] = field(default_factory=list)
    #: The server events this conversation sends (the agent's, or the client's override).
    client_events: frozenset[str] = frozenset()
    text_only: bool = False
    #: The agent's first message, if it spoke first.
    greeting: str | None = None
    feedback: list[Feedback] = field(default_factory=list)
    #: When the agent called ``end_call`` (its agent_tool_response was queued).
    end_calls: list[float] = field(default_factory=list)
    audio_raw: bytearray = field(default_factory=bytearray)
    audio_chunks: int = 0
    _pcm: list[np.ndarray] = field(default_factory=list, repr=False)
    pongs: list[PongRecord] = field(default_factory=list)
    tool_calls: list[str] = field(default_factory=list)
    tool_results: list[ClientToolResult] = field(default_factory=list)
    contextual_updates: list[str] = field(default_factory=list)
    user_messages: list[str] = field(default_factory=list)
    user_activity: list[float] = field(default_factory=list)
    turns: list[TurnRecord] = field(default_factory=list)
    audio_event_ids: list[int] = field(default_factory=list)
    interruptions: list[int] = field(default_factory=list)
    vad_scores: list[float] = field(default_factory=list)
    ignored_messages: int = 0
    open: bool = True
    close_code: int | None = None
    close_reason: str | None = None
    dropped: bool = False
    ended_at: float | None = None

    @property
    def audio_pcm(self) -> np.ndarray:
        """All received user audio, decoded to int16 at the input format's rate."""
        return np.concatenate(self._pcm) if self._pcm else np.zeros(0, dtype=np.int16)

    def add_audio(self, raw: bytes, pcm: np.ndarray) -> None:
        """Record one ``user_audio_chunk`` (raw bytes as received, and decoded)."""
        self.audio_raw += raw
        self.audio_chunks += 1
        self._pcm.append(pcm)

    def finish(self, t: float, code: int | None, reason: str | None, *, dropped: bool = False) -> None:
        """Mark the conversation closed (first call wins)."""
        if not self.open:
            return
        self.open = False
        self.close_code = code
        self.close_reason = reason
        self.dropped = dropped
        self.ended_at = t

"""The simulated agent's turns as values: their event ids, one spoken reply, its alignment, its text parts.

Pure: no sockets, no clock read. :class:`~kioskd.simulator.session.AgentSession` speaks them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Final

from kioskd.protocol.server_events import AgentChatResponsePart, Alignment, ChatResponsePartBody

__all__ = ["GREETING_SEED", "EventIds", "Reply", "alignment", "says_goodbye", "text_parts"]

#: The greeting's audio (turns use their index as the seed).
GREETING_SEED: Final = 1000


@dataclass
class Reply:
    """One agent reply being spoken: audio counts as playing in real time from its first chunk."""

    text: str
    seconds: float
    event_id: int
    first_sent: float | None = None
    interrupted: bool = False

    def speaking(self, now: float) -> bool:
        """The agent is still talking (its audio, played in real time, has not run out)."""
        if self.interrupted:
            return False
        return self.first_sent is None or now < self.first_sent + self.seconds


def says_goodbye(text: str, words: tuple[str, ...]) -> bool:
    """``text`` holds one of the goodbye ``words`` (any case, punctuation aside)."""
    said = {w.strip(".,!?;:'\"").lower() for w in text.split()}
    return any(w.lower() in said for w in words)


def text_parts(reply: Reply) -> list[AgentChatResponsePart]:
    """A text-only reply as agent_chat_response_part start, deltas, stop."""
    parts = [("start", "")] + [("delta", w + " ") for w in reply.text.split()] + [("stop", "")]
    return [
        AgentChatResponsePart(text_response_part=ChatResponsePartBody(text=text, type=kind, event_id=reply.event_id))
        for kind, text in parts
    ]


def alignment(reply: Reply, start: int, length: int, rate: int) -> Alignment:
    """The characters spoken in samples [start, start+length) of the reply at ``rate``, evenly spread."""
    per_char = reply.seconds * 1000 / max(len(reply.text), 1)
    begin, end = start * 1000 / rate, (start + length) * 1000 / rate
    first, last = math.ceil(begin / per_char), math.ceil(end / per_char)
    chars = list(reply.text[first:last])
    starts: list[float] = [round(i * per_char - begin) for i in range(first, first + len(chars))]
    durations: list[float] = [round(per_char)] * len(chars)  # whole milliseconds, as the schema's integers
    return Alignment(chars=chars, char_start_times_ms=starts, char_durations_ms=durations)


class EventIds:
    """Event ids as the service gives them ("turn") or one per message, shared with pings ("message")."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._turns = itertools.count(1)
        self._pings = itertools.count(1) if mode == "turn" else self._turns

    def new_turn(self) -> int:
        """The id of a new turn (a visitor's utterance or message; the agent's greeting)."""
        return next(self._turns)

    def audio_id(self, turn: int) -> int:
        """The id of one audio chunk of the reply in ``turn``."""
        return turn if self.mode == "turn" else next(self._turns)

    def next_ping(self) -> int:
        return next(self._pings)

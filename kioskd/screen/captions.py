"""What the kiosk's screen shows, as a pure model: events and times in, a snapshot out.

No I/O: :class:`ScreenModel` is fed the kiosk's status and the conversation's words by the
daemon (:mod:`kioskd.screen.server`) and answers every change with a new
:meth:`~ScreenModel.snapshot`, a JSON-ready dict the page renders whole. A page opened or
reloaded mid-conversation therefore shows the conversation so far, and when the
conversation ends the captions are cleared, so the next visitor never sees the last one's.

Agent words appear in step with the audio when the service sends ``alignment`` on its
audio events: every word of the agent's reply gets the time (ms from the start of that
turn's audio) at which it is spoken, and the page reveals each word at that time after
``audio_started`` (the moment the kiosk's speaker started the turn). Without alignment the
whole reply is shown at once. An interruption freezes the reveal at the moment it came, and
``agent_response_correction`` replaces the text with what the agent really said.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Caption", "ScreenModel", "word_times"]

Role = Literal["visitor", "agent"]
#: At most this many captions are kept (a long conversation scrolls; the oldest go).
MAX_CAPTIONS = 60
#: A caption longer than this is cut (the page is for reading, not for storage).
MAX_CAPTION_CHARS = 2000
#: Kiosk states in which the screen shows a conversation (reconnecting keeps the visitor's).
IN_CONVERSATION = frozenset({"conversation", "connecting", "reconnecting"})


@dataclass
class Caption:
    """One line on the screen."""

    id: int
    role: Role
    text: str
    final: bool = True
    event_id: int | None = None
    #: Agent only: when each word of ``text`` is spoken, in ms from the turn's audio start.
    words_ms: list[float] | None = None
    #: Agent only: wall-clock time (s) the kiosk's speaker started this turn.
    audio_started: float | None = None
    #: Agent only: ms into the turn at which an interruption cut it (words after it unsaid).
    cut_ms: float | None = None

    def as_json(self) -> dict[str, Any]:
        """The caption as the page receives it."""
        return {
            "id": self.id,
            "role": self.role,
            "text": self.text,
            "final": self.final,
            "words_ms": self.words_ms,
            "audio_started": self.audio_started,
            "cut_ms": self.cut_ms,
        }


@dataclass
class _Alignment:
    """Characters of one agent turn with their start times (ms from the turn's audio start)."""

    chars: list[str] = field(default_factory=list)
    starts_ms: list[float] = field(default_factory=list)
    end_ms: float = 0.0  # where the next audio chunk of the turn starts


def word_times(text: str, chars: list[str], starts_ms: list[float]) -> list[float] | None:
    """Start time of each word of ``text``, from per-character alignment; ``None`` if unusable.

    Words are runs of non-space characters. When the text has no more words than the
    alignment (the same reply, or a correction cut short by an interruption), word *i*
    starts with the alignment's word *i*; a longer text gets a proportional mapping onto the
    aligned words, so a reworded correction still reveals smoothly.
    """
    words = text.split()
    if not words or not chars or len(chars) != len(starts_ms):
        return None
    aligned: list[float] = []
    in_word = False
    for ch, start in zip(chars, starts_ms, strict=True):
        if ch.isspace():
            in_word = False
        elif not in_word:
            aligned.append(start)
            in_word = True
    if not aligned:
        return None
    if len(words) <= len(aligned):
        return aligned[: len(words)]
    return [aligned[min(len(aligned) - 1, i * len(aligned) // len(words))] for i in range(len(words))]


class ScreenModel:
    """The screen's state; every ``on_…`` method returns whether the snapshot changed."""

    def __init__(self, *, language: str = "en", kiosk_name: str = "", notice: str = "") -> None:
        self.language = language
        self.kiosk_name = kiosk_name
        self.notice = notice  # the operator's privacy notice ([privacy] notice_text); "" = the page's own
        self.version = 0
        self.state = "idle"
        self.light = "idle"
        self.reason = ""
        self.mic_live = False
        self.agent_speaking = False
        self.conversation_id: str | None = None
        self.captions: list[Caption] = []
        self._next_id = 1
        self._alignments: dict[int, _Alignment] = {}
        self._speaking_since = 0.0

    # -- the kiosk's status ------------------------------------------------------------

    def on_status(
        self,
        *,
        state: str,
        light: str,
        reason: str,
        mic_live: bool,
        agent_speaking: bool,
        conversation_id: str | None,
        now: float,
    ) -> bool:
        """A new kiosk status (``light`` is the light's pattern name, e.g. ``listening``)."""
        # A resumed conversation (a new id after a dropped link) is the same visitor: the
        # captions stay until the kiosk leaves the conversation states.
        in_conversation = state in IN_CONVERSATION
        if not in_conversation:
            self._clear()
        cid = (conversation_id or self.conversation_id) if in_conversation else None
        if agent_speaking and not self.agent_speaking:
            self._speaking_since = now
            self._speaker_started(now)
        new = (state, light, reason, mic_live, agent_speaking, cid)
        old = (self.state, self.light, self.reason, self.mic_live, self.agent_speaking, self.conversation_id)
        (self.state, self.light, self.reason, self.mic_live, self.agent_speaking,
         self.conversation_id) = new
        return self._bump(new != old)

    # -- the conversation's words ------------------------------------------------------

    def on_visitor(self, text: str, *, final: bool) -> bool:
        """The visitor's words: tentative ones replace each other until the final one."""
        text = text.strip()[:MAX_CAPTION_CHARS]
        last = self.captions[-1] if self.captions else None
        if last is not None and last.role == "visitor" and not last.final:
            if not text and not final:
                return False
            if not text:  # a final transcript that is empty: the tentative line was noise
                self.captions.pop()
                return self._bump(True)
            last.text, last.final = text, final
            return self._bump(True)
        if not text:
            return False
        self._add(Caption(id=0, role="visitor", text=text, final=final))
        return self._bump(True)

    def on_agent(self, text: str, *, event_id: int | None = None) -> bool:
        """The agent's reply to show (``agent_response``); words follow the audio if aligned."""
        text = text.strip()[:MAX_CAPTION_CHARS]
        if not text:
            return False
        self._close_tentative()
        caption = Caption(id=0, role="agent", text=text, event_id=event_id)
        alignment = self._alignments.get(event_id) if event_id is not None else None
        if alignment is not None:
            caption.words_ms = word_times(text, alignment.chars, alignment.starts_ms)
        self._add(caption)
        return self._bump(True)

    def on_alignment(
        self, event_id: int, chars: list[str], starts_ms: list[float], durations_ms: list[float]
    ) -> bool:
        """One audio chunk's alignment (times relative to that chunk) of turn ``event_id``."""
        if not chars or len(chars) != len(starts_ms):
            return False
        turn = self._alignments.setdefault(event_id, _Alignment())
        offset = turn.end_ms
        turn.chars.extend(chars)
        turn.starts_ms.extend(offset + s for s in starts_ms)
        ends = [s + d for s, d in zip(starts_ms, durations_ms, strict=False)]
        turn.end_ms = offset + (max(ends) if ends else max(starts_ms))
        changed = False
        for caption in self.captions:
            if caption.role == "agent" and caption.event_id == event_id:
                caption.words_ms = word_times(caption.text, turn.chars, turn.starts_ms)
                changed = True
        return self._bump(changed)

    def on_correction(self, original: str, corrected: str) -> bool:
        """``agent_response_correction``: the agent was cut and really said ``corrected``."""
        original, corrected = original.strip(), corrected.strip()[:MAX_CAPTION_CHARS]
        for caption in reversed(self.captions):
            if caption.role == "agent" and caption.text == original[:MAX_CAPTION_CHARS]:
                caption.text = corrected
                turn = self._alignments.get(caption.event_id) if caption.event_id is not None else None
                caption.words_ms = word_times(corrected, turn.chars, turn.starts_ms) if turn else None
                return self._bump(True)
        return False

    def on_interruption(self, now: float) -> bool:
        """The visitor talked over the agent: its words stop where the audio stopped."""
        for caption in reversed(self.captions):
            if caption.role == "agent":
                if caption.cut_ms is None and caption.audio_started is not None:
                    caption.cut_ms = max(0.0, (now - caption.audio_started) * 1000.0)
                    return self._bump(True)
                break
        return False

    # -- out ---------------------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready values (``now`` lets the page sync its clock)."""
        return {
            "version": self.version,
            "now": now,
            "language": self.language,
            "kiosk": self.kiosk_name,
            "notice": self.notice,
            "state": self.state,
            "light": self.light,
            "reason": self.reason,
            "mic_live": self.mic_live,
            "agent_speaking": self.agent_speaking,
            "in_conversation": self.state in IN_CONVERSATION,
            "captions": [c.as_json() for c in self.captions],
        }

    # -- inside ------------------------------------------------------------------------

    def _speaker_started(self, now: float) -> None:
        for caption in reversed(self.captions):
            if caption.role == "agent":
                if caption.audio_started is None:
                    caption.audio_started = now
                return

    def _close_tentative(self) -> None:
        if self.captions and self.captions[-1].role == "visitor":
            self.captions[-1].final = True

    def _add(self, caption: Caption) -> None:
        caption.id = self._next_id
        self._next_id += 1
        if caption.role == "agent" and self.agent_speaking:
            # the reply's text came after its audio started: the speaker is already on
            caption.audio_started = self._speaking_since
        self.captions.append(caption)
        del self.captions[:-MAX_CAPTIONS]

    def _clear(self) -> None:
        self.captions.clear()
        self._alignments.clear()

    def _bump(self, changed: bool) -> bool:
        if changed:
            self.version += 1
        return changed

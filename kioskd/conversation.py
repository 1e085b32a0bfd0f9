"""One conversation with the agent as a pure state machine: events and time in, actions out.

Modelled on h11/wsproto: :class:`Conversation` does no I/O and reads no clock. The
driver (:mod:`kioskd.service.session`) feeds it what happened —
:meth:`~Conversation.connected`, each decoded server event (:meth:`~Conversation.receive`),
:meth:`~Conversation.heard` for a pong, :meth:`~Conversation.closed` — and the time
(:meth:`~Conversation.tick`), and carries out the actions it answers with:
:class:`Send` a message, :class:`OpenAudio`, :class:`Play` / :class:`Interrupt` agent
audio, :class:`Show` on the status board, :class:`End` the conversation.

It owns the conversation's explicit :class:`Phase`, the transcript, the routing of
client tool calls (and what ``end_conversation`` does), and the watchdogs as deadline
values: a stalled link (nothing heard for ``network.stall_timeout``), an idle
conversation (``conversation.idle_timeout``) and the maximum length
(``conversation.max_duration``), kept in :class:`~kioskd.watchdogs.Watchdogs`.
:attr:`Conversation.deadline` says when to tick next. Its first message and the words for
a refused override come from :mod:`kioskd.overrides`.

Facts from the service's AsyncAPI and the official clients it relies on (../shared/NOTES.md,
"The real service today"): by default the service sends no ``vad_score``, so the visitor
counts as active on the kiosk's own microphone VAD (``tick(visitor_at=…)``), on
``tentative_user_transcript`` and ``user_transcript``, and on a loud ``vad_score`` when an
agent sends one; the light follows ``vad_score`` when it comes, the local VAD level
otherwise. ``agent_tool_response`` (or its full-payload twin) with ``tool_name == "end_call"``
ends the call, as the JS client does, but only after the goodbye has played: the
microphone stops at once (:class:`StopMic`), the end comes once no audio has arrived for
:data:`GOODBYE_QUIET` and nothing plays. ``error`` events need only ``code``; they and the
close reason are kept and put into the outcome in words (an ``override_error`` says which
override to allow or remove). The visitor's own messages (feedback on the latest agent
event id, as ``BaseConversation.sendFeedback`` does; text; context; activity) come in
through :meth:`Conversation.visitor_message`.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import replace
from typing import Any, Literal

from kioskd.actions import (
    CLOSE_TIMEOUT,
    Action,
    End,
    Interrupt,
    OpenAudio,
    Play,
    Send,
    SessionOutcome,
    SessionStats,
    Show,
    StopMic,
)
from kioskd.audio.formats import AudioFormat
from kioskd.close_codes import closed_outcome
from kioskd.config import Config
from kioskd.overrides import client_data, override_fields, refusal_words, refused_override
from kioskd.protocol.client_messages import ClientToolResult, Feedback, Pong, UserActivity, UserMessage
from kioskd.protocol.codec import ProtocolError, tool_result_text
from kioskd.protocol.common import ContextualUpdate
from kioskd.protocol.server_events import (
    AgentChatResponsePart,
    AgentResponse,
    AgentResponseCorrection,
    AgentToolRequest,
    AgentToolResponse,
    AgentToolResponseFullPayload,
    AudioEvent,
    ClientToolCall,
    ConversationInitiationMetadata,
    ErrorBody,
    ErrorEvent,
    InternalTentativeAgentResponse,
    Interruption,
    McpToolCall,
    Ping,
    ServerEvent,
    TentativeUserTranscript,
    UnknownEvent,
    UserTranscript,
    VadScore,
)
from kioskd.state import KioskState
from kioskd.tools import END_CONVERSATION, ToolRegistry
from kioskd.watchdogs import Drain, Watchdogs

__all__ = ["Conversation", "NotNow", "Phase", "VisitorMessage"]

log = logging.getLogger(__name__)

#: A server vad_score at or above this counts as the visitor speaking (keeps the idle timer alive).
VAD_ACTIVITY = 0.5
#: How long the agent's last words may keep playing after it ended the conversation.
DRAIN_LIMIT = 15.0
#: After the agent ends the call (end_call, end_conversation): the end comes once nothing
#: plays and no agent audio has arrived for this long (counted from the end at the latest,
#: so a goodbye that follows its end_call still plays). Well within the 1 s the close may
#: take after the last audio.
GOODBYE_QUIET = 0.5
#: The agent's system tool that ends the call (agent_tool_response.tool_name).
END_CALL = "end_call"
#: How many distinct unknown event types ``ctl status`` counts (a hostile server cannot grow it).
UNKNOWN_TYPES_KEPT = 32
#: The format assumed when the agent names one we do not know.
FALLBACK_FORMAT = "pcm_16000"


class NotNow(Exception):
    """A visitor message that cannot be sent now; the text says why (for ``kioskd ctl``)."""


VisitorMessage = Literal["feedback", "say", "context", "activity"]


class Phase(enum.Enum):
    """Where a conversation is."""

    CONNECTING = "connecting"  # no link yet
    OPENING = "opening"  # link up, our client data sent, waiting for the agent's metadata
    OPEN = "open"  # metadata received: audio flows both ways
    DRAINING = "draining"  # ending: the agent's last words play out first
    ENDED = "ended"


def _parse_format(name: str, direction: str) -> AudioFormat:
    try:
        return AudioFormat.parse(name)
    except ValueError:
        log.warning("unknown %s audio format %r from the agent; assuming %s", direction, name, FALLBACK_FORMAT)
        return AudioFormat.parse(FALLBACK_FORMAT)


class Conversation:
    """One conversation's state and rules; see the module docstring for the contract."""

    def __init__(self, config: Config, tools: ToolRegistry, *, context: str | None = None) -> None:
        self._clock = Watchdogs(config.conversation, config.network.stall_timeout)
        self._client_data = client_data(config)
        self._tools = tools
        self._context = context
        self._log_transcripts = config.log.transcripts
        self.phase = Phase.CONNECTING
        self.stats = SessionStats()
        self.conversation_id: str | None = None
        #: how it ended (None until it has)
        self.ending: End | None = None
        self._transcript: deque[str] = deque(maxlen=max(config.conversation.context_lines, 1))
        self._audio_open = False
        #: the agent event id feedback rates (as the JS client's currentEventId)
        self._agent_event_id = 0
        #: the agent sends vad_score (then the light follows it, not the local VAD level)
        self._server_vad = False
        self._shown_level: float | None = None
        #: the latest error event (its words go into the outcome)
        self._error: ErrorBody | None = None
        self._overrides = override_fields(self._client_data)

    # ------------------------------------------------------------------ what the driver asks

    @property
    def transcript(self) -> list[str]:
        """The latest transcript lines ("Visitor: …", "Agent: …"), oldest first."""
        return list(self._transcript)

    @property
    def deadline(self) -> float:
        """The next time :meth:`tick` must be called at (a watchdog or a pending end is due)."""
        return self._clock.deadline

    def result(self) -> SessionOutcome:
        """The outcome so far, with the conversation id, whether it opened and the transcript."""
        outcome = self.ending.outcome if self.ending is not None else SessionOutcome("ended")
        return replace(
            outcome,
            conversation_id=self.conversation_id,
            opened=self.conversation_id is not None,
            transcript=self.transcript,
        )

    # ------------------------------------------------------------------ events in, actions out

    def connected(self, now: float) -> list[Action]:
        """The link is up: introduce the kiosk (nothing, if it ended while connecting). Timers start now."""
        self._clock.start(now)
        if self.phase is Phase.ENDED:
            return []
        self.phase = Phase.OPENING
        return [Send(self._client_data)]

    def receive(self, event: ServerEvent | UnknownEvent, now: float) -> list[Action]:
        """A decoded server event arrived at ``now``."""
        self._clock.heard(now)
        if self.phase is Phase.ENDED:
            return []
        return self._handle(event, now)

    def malformed(self, error: ProtocolError, now: float) -> list[Action]:
        """A message arrived that is not valid protocol: skipped, counted, logged."""
        self._clock.heard(now)
        self.stats.malformed += 1
        log.warning("malformed server message skipped id=%s error=%r", self.conversation_id, str(error)[:200])
        return []

    def heard(self, now: float) -> None:
        """Something arrived on the link (a pong): it is alive."""
        self._clock.heard(now)

    def closed(self, code: int | None, now: float, reason: str | None = None) -> list[Action]:
        """The agent closed the link (``code`` None: dropped without a close frame; ``reason`` its text).

        A normal close (1000) of an open conversation lets the agent's last words play
        out first (the driver ticks on); anything else ends it at once. The outcome says
        it in words: the code's meaning, the close reason and the latest error event.
        """
        self._clock.link_closed = True
        outcome = self._closed_in_words(closed_outcome(code), reason)
        level = logging.INFO if code in (1000, None) and self._error is None else logging.WARNING
        log.log(level, "conversation closed id=%s code=%s reason=%r", self.conversation_id, code, outcome.reason)
        if self._clock.drain is not None and code == 1000:
            return []  # already ending on the agent's word: the goodbye plays on
        if code == 1000 and self._audio_open and self.phase is not Phase.ENDED:
            self._clock.drain = Drain(outcome, since=now, until=now + DRAIN_LIMIT)
            self.phase = Phase.DRAINING
            return []
        return self.finish(outcome)

    def tick(
        self, now: float, *, speaking: bool = False, visitor_at: float | None = None, voice_level: float | None = None
    ) -> list[Action]:
        """Time passed. ``speaking``: agent audio is audible now; ``visitor_at``: when the kiosk's
        microphone VAD last heard the visitor; ``voice_level``: its level now (0–1, for the light)."""
        if self.phase in (Phase.CONNECTING, Phase.ENDED):
            return []
        if speaking:
            self._clock.active(now)
        if visitor_at is not None:
            self._clock.active_since(visitor_at)
        shown: list[Action] = []
        if voice_level is not None and not self._server_vad and voice_level != self._shown_level:
            self._shown_level = voice_level
            shown = [Show({"vad_score": voice_level})]
        return shown + self._due(now, speaking)

    def _due(self, now: float, speaking: bool) -> list[Action]:
        """The watchdog or pending end that is due at ``now``, if any."""
        due = self._clock.due(now, speaking)
        if due is None:
            return []
        if self._clock.stalled(now):
            log.warning("link stalled id=%s silent_for=%.1fs", self.conversation_id, now - self._clock.last_heard)
        return self.finish(due.outcome, close_code=due.close_code, close_timeout=due.close_timeout)

    def visitor_message(self, kind: VisitorMessage, text: str = "") -> list[Action]:
        """What the visitor (a touch screen, a second button, a script) sends the agent.

        ``feedback`` (``text`` like/dislike) rates the latest agent event; ``say`` is a text
        message the agent answers; ``context`` a non-interrupting contextual update;
        ``activity`` holds the agent's turn back (the visitor is busy). Raises NotNow
        (with the reason) while the conversation is not open, or with nothing to rate.
        """
        if self.phase is not Phase.OPEN:
            raise NotNow(f"no conversation is open (it is {self.phase.value})")
        if kind == "feedback":
            if text not in ("like", "dislike"):
                raise NotNow(f"feedback must be like or dislike, not {text[:20]!r}")
            if not self._agent_event_id:
                raise NotNow("the agent has not said anything to rate yet")
            return [Send(Feedback(event_id=self._agent_event_id, score="like" if text == "like" else "dislike"))]
        if kind == "activity":
            return [Send(UserActivity())]
        if not text.strip():
            raise NotNow(f"{kind} needs some text")
        if kind == "say":
            self._transcript.append(f"Visitor: {text}")
            return [Send(UserMessage(text=text))]
        return [Send(ContextualUpdate(text=text))]

    def end(self, reason: str = "ended by request") -> list[Action]:
        """Finish cleanly (close 1000). Safe at any time, more than once: the first end wins."""
        return self.finish(SessionOutcome(reason))

    def finish(
        self, outcome: SessionOutcome, *, close_code: int = 1000, close_timeout: float = CLOSE_TIMEOUT
    ) -> list[Action]:
        """End with ``outcome`` (also for link faults the driver saw); later ends are ignored."""
        if self.ending is not None:
            return []
        self.phase = Phase.ENDED
        self.ending = End(outcome, close_code, close_timeout)
        return [self.ending]

    # ------------------------------------------------------------------ server events

    def _handle(self, event: ServerEvent | UnknownEvent, now: float) -> list[Action]:
        cid = self.conversation_id
        match event:
            case AudioEvent(audio_event=body):
                self.stats.audio_events += 1
                self._clock.audio(now)
                self._agent_event_id = body.event_id
                return [Play(body.event_id, body.audio_base_64)] if self._audio_open else []
            case Ping(ping_event=body):
                self.stats.pings += 1
                self.stats.last_ping_ms = body.rtt_ms()
                return [Send(Pong(event_id=body.event_id))]
            case VadScore(vad_score_event=body):
                self._server_vad = True
                if body.vad_score >= VAD_ACTIVITY:
                    self._clock.active(now)
                return [Show({"vad_score": body.vad_score})]
            case Interruption(interruption_event=body):
                self.stats.interruptions += 1
                log.info("agent interrupted id=%s event_id=%d", cid, body.event_id)
                return [Interrupt(body.event_id)] if self._audio_open else []
            case UserTranscript(user_transcription_event=body):
                self._clock.active(now)
                self._transcript.append(f"Visitor: {body.user_transcript}")
                self._log_words("visitor said", cid, body.user_transcript)
            case TentativeUserTranscript(tentative_user_transcription_event=body):
                self._clock.active(now)  # the visitor is talking
                self._log_words("visitor saying", cid, body.user_transcript, logging.DEBUG)
            case AgentResponse(agent_response_event=body):
                self._agent_event_id = body.event_id or self._agent_event_id
                self._transcript.append(f"Agent: {body.agent_response}")
                self._log_words("agent said", cid, body.agent_response)
            case AgentResponseCorrection(agent_response_correction_event=body):
                self._correct(body.original_agent_response, body.corrected_agent_response)
                self._log_words("agent corrected", cid, body.corrected_agent_response)
            case ClientToolCall(client_tool_call=body):
                return self._tool_call(body.tool_name, body.tool_call_id, body.parameters, now)
            case AgentChatResponsePart(text_response_part=part):
                self._log_words(f"agent typing part={part.type}", cid, part.text, logging.DEBUG)
            case AgentToolRequest(agent_tool_request=req):
                log.info("agent runs a tool id=%s tool=%s type=%s", cid, req.tool_name, req.tool_type)
            case AgentToolResponse(agent_tool_response=res) | AgentToolResponseFullPayload(
                agent_tool_response_full_payload=res
            ):
                log.info("agent tool done id=%s tool=%s type=%s is_error=%s", cid, res.tool_name, res.tool_type,
                         res.is_error)
                if res.tool_name == END_CALL:
                    return self._agent_ends(SessionOutcome("the agent ended the call (end_call)"), now)
            case McpToolCall(mcp_tool_call=call):
                log.info("agent MCP tool id=%s tool=%s state=%s", cid, call.tool_name, call.state)
            case ContextualUpdate(text=text):
                self._log_words("agent context update", cid, text[:200])
            case InternalTentativeAgentResponse(tentative_agent_response_internal_event=body):
                self._log_words("agent drafting", cid, body.tentative_agent_response, logging.DEBUG)
            case ErrorEvent(error_event=body):
                self._error = body
                log.warning("agent reported an error id=%s error=%r", cid, body.describe())
                if refused_override(self._overrides, body, None):
                    log.warning("%s", refusal_words(self._overrides, body, None))
            case ConversationInitiationMetadata(conversation_initiation_metadata_event=meta):
                return self._metadata(
                    meta.conversation_id, meta.user_input_audio_format, meta.agent_output_audio_format
                )
            case UnknownEvent(type=kind):
                self.stats.unknown += 1
                kind = kind[:80]
                if kind in self.stats.unknown_types or len(self.stats.unknown_types) < UNKNOWN_TYPES_KEPT:
                    self.stats.unknown_types[kind] = self.stats.unknown_types.get(kind, 0) + 1
                log.debug("server event not used skipped id=%s type=%s", cid, kind)
        return []

    def _agent_ends(self, outcome: SessionOutcome, now: float) -> list[Action]:
        """The agent ends the call: the microphone stops now, the end comes after the goodbye."""
        if self._clock.drain is not None:
            return []
        self._clock.drain = Drain(outcome, since=now, until=now + DRAIN_LIMIT, quiet=GOODBYE_QUIET)
        self.phase = Phase.DRAINING
        return [StopMic()]

    # ------------------------------------------------------------------ errors in words

    def _closed_in_words(self, outcome: SessionOutcome, reason: str | None) -> SessionOutcome:
        """``outcome`` with the close reason and the latest error event in words."""
        words = outcome.reason
        if reason:
            words += f" (close reason: {reason[:200]!r})"
        error = self._error
        if refused_override(self._overrides, error, reason):
            words = refusal_words(self._overrides, error, reason)
        elif error is not None:
            words += f"; the agent's error: {error.describe()}"
        return replace(outcome, reason=words)

    def _log_words(self, what: str, cid: str | None, text: str, level: int = logging.INFO) -> None:
        """Visitors' and the agent's words reach the log only with ``[log] transcripts = true`` (privacy)."""
        if self._log_transcripts:
            log.log(level, "%s id=%s text=%r", what, cid, text)
        else:
            log.log(level, "%s id=%s chars=%d", what, cid, len(text))

    def _correct(self, original: str, corrected: str) -> None:
        for i in range(len(self._transcript) - 1, -1, -1):
            if self._transcript[i] == f"Agent: {original}":
                self._transcript[i] = f"Agent: {corrected}"
                return

    def _tool_call(self, name: str, call_id: str, parameters: Any, now: float) -> list[Action]:
        """Answer at once from the registry (always a string); ``end_conversation`` ends it after the goodbye."""
        self.stats.tool_calls += 1
        result, is_error = self._tools.call(name, parameters if isinstance(parameters, dict) else {})
        log.info("tool call id=%s tool=%s is_error=%s", self.conversation_id, name, is_error)
        actions: list[Action] = [Send(ClientToolResult(call_id, tool_result_text(result), is_error))]
        if name == END_CONVERSATION and not is_error:
            actions += self._agent_ends(SessionOutcome("the agent ended the conversation (end_conversation tool)"), now)
        return actions

    def _metadata(self, conversation_id: str, input_format: str, output_format: str) -> list[Action]:
        if self.conversation_id is not None:
            log.warning("repeated conversation metadata ignored id=%s", self.conversation_id)
            return []
        self.conversation_id = conversation_id or "unknown"
        up = _parse_format(input_format, "input")
        down = _parse_format(output_format, "output")
        log.info("conversation open id=%s input=%s output=%s", self.conversation_id, up.name, down.name)
        self._audio_open = True
        if self.phase is Phase.OPENING:
            self.phase = Phase.OPEN
        actions: list[Action] = [
            OpenAudio(up, down),
            Show({"state": KioskState.CONVERSATION, "reason": "", "conversation_id": self.conversation_id}),
        ]
        if self._context:
            actions.append(Send(ContextualUpdate(text=self._context)))
        return actions

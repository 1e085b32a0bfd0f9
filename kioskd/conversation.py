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
(``conversation.max_duration``). :attr:`Conversation.deadline` says when to tick next.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

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
)
from kioskd.audio.formats import AudioFormat
from kioskd.close_codes import REJECTED, describe_close
from kioskd.config import Config
from kioskd.protocol import (
    AgentOverride,
    AgentPromptOverride,
    AgentResponse,
    AgentResponseCorrection,
    AudioEvent,
    ClientToolCall,
    ClientToolResult,
    ContextualUpdate,
    ConversationConfigOverride,
    ConversationInitiationClientData,
    ConversationInitiationMetadata,
    DynamicValue,
    ErrorEvent,
    InternalTentativeAgentResponse,
    Interruption,
    Ping,
    Pong,
    ProtocolError,
    ServerEvent,
    TtsOverride,
    UnknownEvent,
    UserTranscript,
    VadScore,
)
from kioskd.state import KioskState
from kioskd.tools import END_CONVERSATION, ToolRegistry

__all__ = ["Conversation", "Phase", "client_data", "closed_outcome"]

log = logging.getLogger(__name__)

#: A stalled link gets no close handshake: nothing would come back, and recovery must not wait.
STALLED_CLOSE_TIMEOUT = 0.0
#: The close code we send when we give up on a stalled link.
STALLED_CLOSE_CODE = 1001
#: A server vad_score at or above this counts as the visitor speaking (keeps the idle timer alive).
VAD_ACTIVITY = 0.5
#: How long the agent's last words may keep playing after it ended the conversation.
DRAIN_LIMIT = 15.0
#: After the end_conversation tool, how long to wait for the agent's goodbye to start arriving.
GOODBYE_START = 0.05
#: The format assumed when the agent names one we do not know.
FALLBACK_FORMAT = "pcm_16000"


class Phase(enum.Enum):
    """Where a conversation is."""

    CONNECTING = "connecting"  # no link yet
    OPENING = "opening"  # link up, our client data sent, waiting for the agent's metadata
    OPEN = "open"  # metadata received: audio flows both ways
    DRAINING = "draining"  # ending: the agent's last words play out first
    ENDED = "ended"


def client_data(config: Config) -> ConversationInitiationClientData:
    """The first message of every conversation: overrides and dynamic variables from config."""
    agent = config.agent
    agent_override = AgentOverride(
        prompt=AgentPromptOverride(prompt=agent.prompt) if agent.prompt else None,
        first_message=agent.first_message or None,
        language=agent.language or None,
    )
    override = ConversationConfigOverride(
        agent=agent_override if agent_override != AgentOverride() else None,
        tts=TtsOverride(voice_id=agent.voice_id) if agent.voice_id else None,
    )
    variables: dict[str, DynamicValue] = {"kiosk_id": config.kiosk.id, "kiosk_location": config.kiosk.location}
    variables.update(agent.dynamic_variables)
    return ConversationInitiationClientData(
        conversation_config_override=override if override != ConversationConfigOverride() else None,
        dynamic_variables=variables,
    )


def closed_outcome(code: int | None) -> SessionOutcome:
    """The outcome of a close with ``code`` (None: dropped without a close frame)."""
    meaning, resumable = describe_close(code)
    return SessionOutcome(meaning, resumable=resumable, rejected=code == REJECTED, close_code=code)


def _parse_format(name: str, direction: str) -> AudioFormat:
    try:
        return AudioFormat.parse(name)
    except ValueError:
        log.warning("unknown %s audio format %r from the agent; assuming %s", direction, name, FALLBACK_FORMAT)
        return AudioFormat.parse(FALLBACK_FORMAT)


@dataclass(frozen=True)
class _Drain:
    """A pending end: wait until ``not_before``, then until nothing plays (at most until ``until``)."""

    outcome: SessionOutcome
    not_before: float
    until: float


class Conversation:
    """One conversation's state and rules; see the module docstring for the contract."""

    def __init__(self, config: Config, tools: ToolRegistry, *, context: str | None = None) -> None:
        self._limits = config.conversation
        self._stall = config.network.stall_timeout
        self._client_data = client_data(config)
        self._tools = tools
        self._context = context
        self.phase = Phase.CONNECTING
        self.stats = SessionStats()
        self.conversation_id: str | None = None
        #: how it ended (None until it has)
        self.ending: End | None = None
        self._transcript: deque[str] = deque(maxlen=max(config.conversation.context_lines, 1))
        self._audio_open = False
        self._link_closed = False
        self._drain: _Drain | None = None
        self._opened_at = self._last_heard = self._last_activity = 0.0

    # ------------------------------------------------------------------ what the driver asks

    @property
    def transcript(self) -> list[str]:
        """The latest transcript lines ("Visitor: …", "Agent: …"), oldest first."""
        return list(self._transcript)

    @property
    def deadline(self) -> float:
        """The next time :meth:`tick` must be called at (a watchdog or a pending end is due)."""
        times = [self._last_activity + self._limits.idle_timeout, self._opened_at + self._limits.max_duration]
        if not self._link_closed:
            times.append(self._last_heard + self._stall)
        if self._drain is not None:
            times.append(self._drain.not_before)
        return min(times)

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
        self._opened_at = self._last_heard = self._last_activity = now
        if self.phase is Phase.ENDED:
            return []
        self.phase = Phase.OPENING
        return [Send(self._client_data)]

    def receive(self, event: ServerEvent | UnknownEvent, now: float) -> list[Action]:
        """A decoded server event arrived at ``now``."""
        self._last_heard = max(self._last_heard, now)
        if self.phase is Phase.ENDED:
            return []
        return self._handle(event, now)

    def malformed(self, error: ProtocolError, now: float) -> list[Action]:
        """A message arrived that is not valid protocol: skipped, counted, logged."""
        self._last_heard = max(self._last_heard, now)
        self.stats.malformed += 1
        log.warning("malformed server message skipped id=%s error=%r", self.conversation_id, str(error)[:200])
        return []

    def heard(self, now: float) -> None:
        """Something arrived on the link (a pong): it is alive."""
        self._last_heard = max(self._last_heard, now)

    def closed(self, code: int | None, now: float) -> list[Action]:
        """The agent closed the link (``code`` None: dropped without a close frame).

        A normal close (1000) of an open conversation lets the agent's last words play
        out first (the driver ticks on); anything else ends it at once.
        """
        self._link_closed = True
        outcome = closed_outcome(code)
        log.info("conversation closed id=%s code=%s reason=%r", self.conversation_id, code, outcome.reason)
        if code == 1000 and self._audio_open and self.phase is not Phase.ENDED:
            self._drain = _Drain(outcome, not_before=now, until=now + DRAIN_LIMIT)
            self.phase = Phase.DRAINING
            return []
        return self.finish(outcome)

    def tick(self, now: float, *, speaking: bool = False) -> list[Action]:
        """Time passed; ``speaking``: agent audio is audible now (that is activity too)."""
        if self.phase in (Phase.CONNECTING, Phase.ENDED):
            return []
        if speaking:
            self._last_activity = now
        if not self._link_closed and now >= self._last_heard + self._stall:
            log.warning("link stalled id=%s silent_for=%.1fs", self.conversation_id, now - self._last_heard)
            return self.finish(
                SessionOutcome(f"link stalled: nothing heard for {self._stall:g} s", resumable=True),
                close_code=STALLED_CLOSE_CODE,
                close_timeout=STALLED_CLOSE_TIMEOUT,
            )
        if now >= self._last_activity + self._limits.idle_timeout:
            return self.finish(SessionOutcome(f"no speech from visitor or agent for {self._limits.idle_timeout:g} s"))
        if now >= self._opened_at + self._limits.max_duration:
            return self.finish(SessionOutcome(f"maximum length of {self._limits.max_duration:g} s reached"))
        drain = self._drain
        if drain is not None and now >= drain.not_before and (not speaking or now >= drain.until):
            return self.finish(drain.outcome)
        return []

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
                self._last_activity = now
                return [Play(body.event_id, body.audio_base_64)] if self._audio_open else []
            case Ping(ping_event=body):
                self.stats.pings += 1
                self.stats.last_ping_ms = body.rtt_ms()
                return [Send(Pong(event_id=body.event_id))]
            case VadScore(vad_score_event=body):
                if body.vad_score >= VAD_ACTIVITY:
                    self._last_activity = now
                return [Show({"vad_score": body.vad_score})]
            case Interruption(interruption_event=body):
                self.stats.interruptions += 1
                log.info("agent interrupted id=%s event_id=%d", cid, body.event_id)
                return [Interrupt(body.event_id)] if self._audio_open else []
            case UserTranscript(user_transcription_event=body):
                self._last_activity = now
                self._transcript.append(f"Visitor: {body.user_transcript}")
                log.info("visitor said id=%s text=%r", cid, body.user_transcript)
            case AgentResponse(agent_response_event=body):
                self._transcript.append(f"Agent: {body.agent_response}")
                log.info("agent said id=%s text=%r", cid, body.agent_response)
            case AgentResponseCorrection(agent_response_correction_event=body):
                self._correct(body.original_agent_response, body.corrected_agent_response)
                log.info("agent corrected id=%s text=%r", cid, body.corrected_agent_response)
            case ClientToolCall(client_tool_call=body):
                return self._tool_call(body.tool_name, body.tool_call_id, body.parameters, now)
            case ContextualUpdate(text=text):
                log.info("agent context update id=%s text=%r", cid, text[:200])
            case InternalTentativeAgentResponse(tentative_agent_response_internal_event=body):
                log.debug("agent drafting id=%s text=%r", cid, body.tentative_agent_response)
            case ErrorEvent(error_event=body):
                log.warning(
                    "agent reported an error id=%s code=%s type=%s message=%r",
                    cid, body.code, body.error_type, body.message,
                )
            case ConversationInitiationMetadata(conversation_initiation_metadata_event=meta):
                return self._metadata(
                    meta.conversation_id, meta.user_input_audio_format, meta.agent_output_audio_format
                )
            case UnknownEvent(type=kind):
                self.stats.unknown += 1
                log.warning("unknown server event skipped id=%s type=%s", cid, kind[:80])
        return []

    def _correct(self, original: str, corrected: str) -> None:
        for i in range(len(self._transcript) - 1, -1, -1):
            if self._transcript[i] == f"Agent: {original}":
                self._transcript[i] = f"Agent: {corrected}"
                return

    def _tool_call(self, name: str, call_id: str, parameters: Any, now: float) -> list[Action]:
        """Answer at once from the registry; ``end_conversation`` ends it once the goodbye has played."""
        self.stats.tool_calls += 1
        result, is_error = self._tools.call(name, parameters)
        log.info("tool call id=%s tool=%s is_error=%s", self.conversation_id, name, is_error)
        if name == END_CONVERSATION and not is_error and self._drain is None:
            start = now + GOODBYE_START
            outcome = SessionOutcome("the agent ended the conversation (end_conversation tool)")
            self._drain = _Drain(outcome, not_before=start, until=start + DRAIN_LIMIT)
            self.phase = Phase.DRAINING
        return [Send(ClientToolResult(call_id, result, is_error))]

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

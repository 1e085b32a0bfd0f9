"""The simulated agent's voice: its replies spoken (audio chunks or text parts), its tool calls, end_call.

One :class:`AgentVoice` per conversation, driven by
:class:`~kioskd.simulator.session.AgentSession`: :meth:`AgentVoice.answer` a visitor's turn,
:meth:`AgentVoice.start_reply` (the greeting), :meth:`AgentVoice.cut` when the visitor barges
in. Audio is queued faster than real time and counts as playing in real time from its first
chunk (:class:`~kioskd.simulator.replies.Reply`).
"""

from __future__ import annotations

import itertools

import trio

from kioskd.audio.formats import AudioFormat, encode
from kioskd.protocol.server_events import (
    AgentResponse,
    AgentResponseBody,
    AgentToolResponse,
    AgentToolResponseBody,
    AudioBody,
    AudioEvent,
    ClientToolCall,
    ClientToolCallBody,
    InternalTentativeAgentResponse,
    TentativeAgentResponseBody,
    UserTranscript,
    UserTranscriptBody,
)
from kioskd.simulator.outbox import AudioItem, Close, Outbox
from kioskd.simulator.records import Conversation, TurnRecord
from kioskd.simulator.replies import EventIds, Reply, alignment, says_goodbye, text_parts
from kioskd.simulator.settings import SimulatorConfig
from kioskd.simulator.speech import synth_speech

__all__ = ["AgentVoice"]


class AgentVoice:
    """The agent's side of one conversation: what it says, and the tools it runs while saying it."""

    def __init__(
        self, outbox: Outbox, record: Conversation, config: SimulatorConfig, ids: EventIds, fmt: AudioFormat
    ) -> None:
        self._out = outbox
        self._record = record
        self._config = config
        self._ids = ids
        self._fmt = fmt
        #: the reply being spoken (the latest one)
        self.reply: Reply | None = None
        self._scope: trio.CancelScope | None = None
        self._tool_calls = itertools.count(1)
        #: where replies run: the conversation's nursery (set once it runs)
        self.nursery: trio.Nursery | None = None

    def cut(self, now: float) -> Reply | None:
        """The visitor barges in: the reply still speaking at ``now`` stops (and is returned), if any."""
        reply = self.reply
        if reply is None or not reply.speaking(now):
            return None
        reply.interrupted = True
        if self._scope is not None:
            self._scope.cancel()
        return reply

    def answer(self, transcript: str, speech_ms: int, event_id: int, now: float) -> None:
        """The visitor's turn ``event_id`` ended with ``transcript``: the agent replies (same id)."""
        turn_index = len(self._record.turns)
        goodbye = self._config.end_call is not None and says_goodbye(transcript, self._config.goodbye_words)
        text = self._config.goodbye if goodbye else self._config.replies[turn_index % len(self._config.replies)]
        self._record.turns.append(TurnRecord(now, transcript if speech_ms else None, speech_ms, text))
        if speech_ms:
            body = UserTranscriptBody(user_transcript=transcript, event_id=event_id)
            self._out.send(UserTranscript(user_transcription_event=body))
        self.start_reply(text, event_id, seed=turn_index, turn_index=turn_index, goodbye=goodbye)

    def start_reply(self, text: str, event_id: int, *, seed: int, turn_index: int | None = None,
                     goodbye: bool = False) -> None:
        if self._scope is not None:
            self._scope.cancel()
        tentative = " ".join(text.split()[:3])
        self._out.send(InternalTentativeAgentResponse(
            tentative_agent_response_internal_event=TentativeAgentResponseBody(tentative_agent_response=tentative)))
        self._out.send(AgentResponse(agent_response_event=AgentResponseBody(agent_response=text, event_id=event_id)))
        seconds = 0.0 if self._record.text_only else self._config.reply_seconds
        reply = Reply(text, seconds, event_id)
        self.reply = reply
        scope = trio.CancelScope()
        self._scope = scope
        assert self.nursery is not None
        self.nursery.start_soon(self._speak, reply, seed, turn_index, goodbye, scope)

    async def _speak(self, reply: Reply, seed: int, turn_index: int | None, goodbye: bool,
                     scope: trio.CancelScope) -> None:
        """Queue the reply (audio in chunks, faster than real time, or text parts); then its tool call."""
        with scope:
            when = self._config.end_call if goodbye else None
            if when == "before":
                self._call_end_call(reply)
            if self._record.text_only:
                for part in text_parts(reply):
                    self._out.put(part)
            else:
                rate = self._fmt.rate
                samples = synth_speech(reply.seconds, rate, seed=seed)
                step = max(1, rate * self._config.reply_chunk_ms // 1000)
                pause = self._config.reply_chunk_ms / 1000 / max(self._config.reply_speedup, 1e-6)
                starts = range(0, len(samples), step)
                for n, start in enumerate(starts):
                    if when == "during" and n == len(starts) // 2:
                        self._call_end_call(reply)
                    chunk = samples[start : start + step]
                    body = AudioBody(
                        audio_base_64=encode(chunk, self._fmt), event_id=self._ids.audio_id(reply.event_id),
                        alignment=alignment(reply, start, len(chunk), rate) if self._config.alignment else None,
                    )
                    if "audio" in self._out.events:
                        self._out.put(AudioItem(reply, AudioEvent(audio_event=body)))
                    await trio.sleep(pause)
            if when == "after":
                self._call_end_call(reply)
            if turn_index == 0 and self._config.tool_call is not None and not self._record.tool_calls:
                name, params = self._config.tool_call
                call_id = f"toolu_sim_{next(self._tool_calls)}"
                self._record.tool_calls.append(call_id)
                self._out.send(
                    ClientToolCall(
                        client_tool_call=ClientToolCallBody(
                            tool_name=name, tool_call_id=call_id, parameters=dict(params), event_id=reply.event_id
                        )
                    )
                )

    def _call_end_call(self, reply: Reply) -> None:
        """The agent runs its end_call system tool; it closes the call itself once the goodbye has played."""
        self._record.end_calls.append(trio.current_time())
        self._out.send(AgentToolResponse(agent_tool_response=AgentToolResponseBody(
            tool_name="end_call", tool_call_id=f"toolu_end_{next(self._tool_calls)}", tool_type="system",
            is_error=False, is_called=True, event_id=reply.event_id)))
        assert self.nursery is not None
        self.nursery.start_soon(self._close_after_goodbye, reply)

    async def _close_after_goodbye(self, reply: Reply) -> None:
        while reply.first_sent is None and not self._record.text_only:
            await trio.sleep(self._config.reply_chunk_ms / 1000)
        if reply.first_sent is not None:
            await trio.sleep_until(reply.first_sent + reply.seconds)
        await trio.sleep(self._config.end_call_close_after)
        self._out.put(Close(1000, "the agent ended the call"))

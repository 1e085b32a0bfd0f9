"""One simulated conversation on one WebSocket: client data, metadata, turns, replies, timers.

Turn-taking decisions come from the pure :mod:`kioskd.simulator.turns`, replies from
:mod:`kioskd.simulator.replies`; every outgoing message goes through one
:class:`~kioskd.simulator.outbox.Outbox` so the delay and stall faults apply to all of it in order.

By default it behaves as the service's AsyncAPI and the official clients say (NOTES, "The
real service today"): it sends only its client events (the schema's default list plus the
tool events; a ``conversation.client_events`` override replaces them, a forbidden override
is refused with ``override_error`` and 1008); one event id per turn (the visitor's turn
and the agent's reply share it; an interruption carries the interrupting turn's id; pings
count apart); the agent greets with its ``first_message``; ``tentative_user_transcript``
while the visitor talks; character ``alignment`` on audio; a visitor's goodbye gets a
goodbye and ``end_call`` (``agent_tool_response``, as the JS client expects); ``text_only``
streams ``agent_chat_response_part`` instead of audio; 60 s without audio sends an
``error`` (``transport_receive_timeout``, code 1002) before the 1002 close. Assumptions
beyond the sources: the exact error texts, the agent closing (1000) a few seconds after
its goodbye has played, and text-only conversations never timing out on silence.
``settings.LEGACY`` brings back the behaviour before that (issue 12).
"""

from __future__ import annotations

import logging
import socket
import struct
from typing import Final

import soxr
import trio
import webrtcvad
from trio_websocket import ConnectionClosed, WebSocketConnection

from kioskd.audio.formats import AudioFormat, decode
from kioskd.protocol.client_messages import (
    ClientMessage,
    ClientToolResult,
    ConversationConfigOverride,
    ConversationInitiationClientData,
    Feedback,
    Pong,
    UserActivity,
    UserAudioChunk,
    UserMessage,
)
from kioskd.protocol.codec import ProtocolError, decode_client_message
from kioskd.protocol.common import ContextualUpdate
from kioskd.protocol.server_events import (
    AgentResponseCorrection,
    AgentResponseCorrectionBody,
    ConversationInitiationMetadata,
    ErrorBody,
    ErrorEvent,
    InitiationMetadataBody,
    Ping,
    PingBody,
    TentativeUserTranscript,
    UserTranscriptBody,
    VadScore,
    VadScoreBody,
)
from kioskd.simulator.faults import MALFORMED_KINDS, AgentFaults, MalformedKind
from kioskd.simulator.outbox import RAW, Close, InterruptMarker, Malformed, Outbox, malformed_text
from kioskd.simulator.records import ChangeSignal, Conversation, PongRecord
from kioskd.simulator.replies import GREETING_SEED, EventIds
from kioskd.simulator.settings import SimulatorConfig
from kioskd.simulator.turns import FRAME_MS, FrameSplitter, TurnDetector, VadScoreWindow
from kioskd.simulator.voice import AgentVoice

__all__ = ["CLOSE_TIMEOUT", "AgentSession"]

log = logging.getLogger(__name__)

VAD_RATE: Final = 16000
#: How long the agent waits for the client's half of a closing handshake.
CLOSE_TIMEOUT: Final = 2.0


class AgentSession:
    """One conversation on one WebSocket."""

    def __init__(
        self,
        ws: WebSocketConnection,
        record: Conversation,
        config: SimulatorConfig,
        faults: AgentFaults,
        changes: ChangeSignal,
    ) -> None:
        self.ws = ws
        self.record = record
        self.config = config
        self.faults = faults
        self.changes = changes
        self.in_fmt = AudioFormat.parse(config.input_format)
        self.out_fmt = AudioFormat.parse(config.output_format)
        self._outbox = Outbox(config.client_events)
        self._ids = EventIds(config.event_ids)
        self._first_message = config.first_message
        self._last_rtt_ms: int | None = None
        self._last_user_audio = record.started_at
        self._vad = webrtcvad.Vad(config.vad_mode)
        self._resampler = (
            None if self.in_fmt.rate == VAD_RATE else soxr.ResampleStream(self.in_fmt.rate, VAD_RATE, 1, dtype="int16")
        )
        self._frames = FrameSplitter(VAD_RATE * FRAME_MS // 1000)
        self._turns = TurnDetector(config.end_of_speech_ms)
        self._scores = VadScoreWindow(config.vad_score_ms) if config.vad_score_ms > 0 else None
        #: the visitor's turn under way: its event id once it has one, and speech since the last tentative
        self._user_turn: int | None = None
        self._tentative_ms = 0
        self._voice = AgentVoice(self._outbox, record, config, self._ids, self.out_fmt)
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Client data, metadata, the greeting, then serve until the conversation ends."""
        async with trio.open_nursery() as nursery:
            self._nursery = self._voice.nursery = nursery
            nursery.start_soon(
                self._outbox.run, self.ws, self.record, self.faults, self.changes, self._close, self._closed_by_peer
            )
            first = await self._first_message_in()
            if first is _CLOSED:
                nursery.cancel_scope.cancel()
                return
            if isinstance(first, (str, bytes)):
                first = self._take_client_data(first)
                if first is _CLOSED:
                    return
            self.record.client_events = self._outbox.events
            body = InitiationMetadataBody(
                conversation_id=self.record.conversation_id,
                agent_output_audio_format=self.out_fmt.name,
                user_input_audio_format=self.in_fmt.name,
            )
            self._outbox.send(ConversationInitiationMetadata(conversation_initiation_metadata_event=body))
            if first is not None:
                await self._on_message(first)
            if self._first_message:
                self.record.greeting = self._first_message
                self._voice.start_reply(self._first_message, self._ids.new_turn(), seed=GREETING_SEED)
            nursery.start_soon(self._receiver)
            nursery.start_soon(self._pinger)
            if not self.record.text_only:  # a text conversation sends no audio to time out on
                nursery.start_soon(self._silence_watchdog)
            nursery.start_soon(self._max_duration)

    async def _first_message_in(self) -> str | bytes | object | None:
        """The client's first message if it comes within ``client_data_wait``."""
        with trio.move_on_after(self.config.client_data_wait):
            try:
                return await self.ws.get_message()
            except ConnectionClosed as exc:
                self._closed_by_peer(exc)
                return _CLOSED
        return None

    def _take_client_data(self, data: str | bytes) -> str | bytes | object | None:
        """Apply the overrides of a first ``conversation_initiation_client_data`` (before the metadata).

        Returns the message still to be handled (None once applied), or _CLOSED when an
        override the agent forbids made it refuse the conversation.
        """
        try:
            message = decode_client_message(data)
        except ProtocolError:
            return data  # handled (and refused) like any invalid message
        if not isinstance(message, ConversationInitiationClientData):
            return data
        self._record_message(message, data, trio.current_time())
        self.record.client_data = message
        override = message.conversation_config_override or ConversationConfigOverride()
        fields = override.fields_set()
        refused = [name for name in fields if name in self.config.forbidden_overrides]
        if refused:
            name = refused[0]
            text = f"Override for field '{name.rsplit('.', 1)[-1]}' is not allowed by config."
            self._outbox.send(ErrorEvent(error_event=ErrorBody(
                code=1008, message=text, error_type="override_error", reason=text,
                debug_message=f"conversation_config_override.{name} is not enabled in the agent's security settings",
            )))
            self._outbox.put(Close(1008, text))
            return _CLOSED
        conversation = override.conversation
        if conversation is not None and conversation.client_events:
            self._outbox.events = frozenset(conversation.client_events)
        if conversation is not None and conversation.text_only:
            self.record.text_only = True
        if override.agent is not None and override.agent.first_message is not None:
            self._first_message = override.agent.first_message
        return None

    def _end(self, code: int | None, reason: str | None, *, dropped: bool = False) -> None:
        self.record.finish(trio.current_time(), code, reason, dropped=dropped)
        self.changes.notify()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _closed_by_peer(self, exc: ConnectionClosed) -> None:
        reason = exc.reason
        self._end(reason.code if reason else None, reason.reason if reason else None)

    async def _close(self, code: int, reason: str) -> None:
        log.info("simulated agent: closing id=%s code=%d reason=%s", self.record.conversation_id, code, reason)
        self.record.finish(trio.current_time(), code, reason)
        self.changes.notify()
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self.ws.aclose(code, reason)
        self._end(code, reason)

    # ------------------------------------------------------------------ faults (sync, from any task)

    def fault_drop(self) -> None:
        """Reset the TCP connection now: no close frame, the peer sees a dead socket."""
        stream = self.ws._stream  # trio-websocket keeps the transport here
        sock = getattr(stream, "socket", None)
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            sock.close()
        self._end(None, "dropped by fault", dropped=True)

    def fault_close(self, code: int, reason: str) -> None:
        """Close with ``code`` once queued messages are out."""
        self._outbox.put(Close(code, reason))

    def fault_malformed(self, count: int, kind: MalformedKind) -> None:
        """Queue ``count`` malformed events."""
        kinds = MALFORMED_KINDS if kind == "mixed" else (kind,)
        for i in range(count):
            kind_i = kinds[i % len(kinds)]
            self._outbox.put(Malformed(kind_i, malformed_text(kind_i, self._ids.next_ping())))

    def fault_raw(self, text: str) -> None:
        """Queue ``text`` to be sent as it is."""
        self._outbox.put(Malformed(RAW, text))

    # ------------------------------------------------------------------ incoming

    async def _receiver(self) -> None:
        while True:
            try:
                data = await self.ws.get_message()
            except ConnectionClosed as exc:
                self._closed_by_peer(exc)
                return
            if self.faults.stall:
                self.record.ignored_messages += 1
                continue
            await self._on_message(data)

    def _record_message(self, message: ClientMessage, data: str | bytes, now: float) -> None:
        self.record.messages.append((now, message))
        if not isinstance(message, UserAudioChunk):
            self.record.raw_messages.append((now, data if isinstance(data, str) else data.decode("utf-8", "replace")))

    async def _on_message(self, data: str | bytes | object) -> None:
        assert isinstance(data, (str, bytes))
        now = trio.current_time()
        try:
            message = decode_client_message(data)
        except ProtocolError as exc:
            log.info("simulated agent: invalid client message id=%s error=%s", self.record.conversation_id, exc)
            text = f"invalid message: {exc}"[:120]
            self._outbox.send(ErrorEvent(error_event=ErrorBody(code=1008, message=text, error_type="invalid_message")))
            self._outbox.put(Close(1008, text))
            return
        rec = self.record
        self._record_message(message, data, now)
        if isinstance(message, UserAudioChunk):
            self._on_audio(message.user_audio_chunk, now)
        elif isinstance(message, Pong):
            sent = self._outbox.ping_sent.pop(message.event_id, None)
            rtt = None if sent is None else now - sent
            if rtt is not None:
                self._last_rtt_ms = round(rtt * 1000)
            rec.pongs.append(PongRecord(message.event_id, now, rtt))
        elif isinstance(message, ConversationInitiationClientData):
            rec.client_data = message
        elif isinstance(message, ClientToolResult):
            rec.tool_results.append(message)
        elif isinstance(message, ContextualUpdate):
            rec.contextual_updates.append(message.text)
        elif isinstance(message, UserMessage):
            rec.user_messages.append(message.text or "")
            if message.text:
                self._voice.answer(message.text, 0, self._ids.new_turn(), now)
        elif isinstance(message, UserActivity):
            rec.user_activity.append(now)
        elif isinstance(message, Feedback):
            rec.feedback.append(message)
        self.changes.notify()

    def _on_audio(self, raw: bytes, now: float) -> None:
        pcm = decode(raw, self.in_fmt)
        self.record.add_audio(raw, pcm)
        self._last_user_audio = now
        if self.record.text_only:
            return
        pcm16 = pcm if self._resampler is None else self._resampler.resample_chunk(pcm)
        for frame in self._frames.feed(pcm16):
            speech = self._vad.is_speech(frame.tobytes(), VAD_RATE)
            if self._scores is not None:
                score = self._scores.feed(speech)
                if score is not None and "vad_score" in self._outbox.events:
                    self.record.vad_scores.append(score)
                    self._outbox.send(VadScore(vad_score_event=VadScoreBody(vad_score=score)))
            end = self._turns.feed(speech)
            if speech:
                self._tentative_ms += FRAME_MS
                if self.config.tentative_ms and self._tentative_ms >= self.config.tentative_ms:
                    self._tentative_ms = 0
                    self._send_tentative()
            if self._turns.speech_ms >= self.config.barge_in_ms:
                self._maybe_interrupt(now)
            if end is not None:
                transcript = self._transcript(end.speech_ms)
                self._voice.answer(transcript, end.speech_ms, self._visitor_turn(), now)
                self._user_turn = None
                self._tentative_ms = 0
            elif not self._turns.in_speech:
                self._tentative_ms = 0

    def _visitor_turn(self) -> int:
        """The event id of the visitor's turn under way (a new turn at its first event)."""
        if self._user_turn is None:
            self._user_turn = self._ids.new_turn()
        return self._user_turn

    def _send_tentative(self) -> None:
        words = self._transcript(self._turns.speech_ms).split()
        shown = " ".join(words[: max(1, min(len(words), self._turns.speech_ms // max(self.config.tentative_ms, 1)))])
        body = UserTranscriptBody(user_transcript=shown, event_id=self._visitor_turn())
        self._outbox.send(TentativeUserTranscript(tentative_user_transcription_event=body))

    def _maybe_interrupt(self, now: float) -> None:
        reply = self._voice.cut(now)
        if reply is None or "interruption" not in self._outbox.events:
            return
        # per-turn ids: the interruption carries the interrupting turn's id (its reply shares it)
        self._outbox.put(InterruptMarker(None if self._ids.mode == "message" else self._visitor_turn()))
        played = 0.0 if reply.first_sent is None else min(1.0, (now - reply.first_sent) / reply.seconds)
        words = reply.text.split()
        cut = " ".join(words[: int(len(words) * played)]) + "..."
        self._outbox.send(
            AgentResponseCorrection(
                agent_response_correction_event=AgentResponseCorrectionBody(
                    original_agent_response=reply.text, corrected_agent_response=cut, event_id=reply.event_id
                )
            )
        )

    def _transcript(self, speech_ms: int) -> str:
        index = len(self.record.turns)
        if index < len(self.config.transcripts):
            return self.config.transcripts[index]
        return f"(simulated transcript: {speech_ms / 1000:.1f} s of speech)"

    # ------------------------------------------------------------------ timers

    async def _pinger(self) -> None:
        while True:
            await trio.sleep(self.config.ping_interval)
            if self.faults.stall:
                continue
            self._outbox.send(Ping(ping_event=PingBody(event_id=self._ids.next_ping(), ping_ms=self._last_rtt_ms)))

    async def _silence_watchdog(self) -> None:
        while True:
            deadline = self._last_user_audio + self.config.silence_timeout
            if trio.current_time() >= deadline:
                if self.faults.stall:
                    self._last_user_audio = trio.current_time()
                    continue
                text = f"No user input received for {self.config.silence_timeout:g} seconds"
                if self.config.silence_error:
                    self._outbox.send(ErrorEvent(error_event=ErrorBody(
                        code=1002, message=text, error_type="transport_receive_timeout", reason="timeout")))
                self._outbox.put(Close(1002, "no user audio received"))
                return
            await trio.sleep_until(deadline)

    async def _max_duration(self) -> None:
        await trio.sleep(self.config.max_duration)
        self._outbox.send(
            ErrorEvent(
                error_event=ErrorBody(
                    code=1000, message="maximum conversation duration reached", error_type="max_duration_exceeded"
                )
            )
        )
        self._outbox.put(Close(1000, "maximum duration reached"))


_CLOSED: Final = object()

"""The simulated Conversational AI agent: a protocol-faithful WebSocket server on loopback.

One :class:`AgentServer` serves ``/v1/convai/conversation?agent_id=…&token=…``; each
connection runs as one :class:`_Session` that records what it sees in a
:class:`~kioskd.simulator.records.Conversation`. Turn-taking decisions come from the pure
:mod:`kioskd.simulator.turns`; every outgoing message goes through one queue so the
delay and stall faults apply to all of it in order.

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

import itertools
import logging
import math
import socket
import struct
from dataclasses import dataclass
from functools import partial
from typing import Final
from urllib.parse import parse_qs, urlsplit

import soxr
import trio
import webrtcvad
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from kioskd import websocket_fix
from kioskd.audio.formats import AudioFormat, decode, encode
from kioskd.protocol import codec
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
    AgentChatResponsePart,
    AgentResponse,
    AgentResponseBody,
    AgentResponseCorrection,
    AgentResponseCorrectionBody,
    AgentToolResponse,
    AgentToolResponseBody,
    Alignment,
    AudioBody,
    AudioEvent,
    ChatResponsePartBody,
    ClientToolCall,
    ClientToolCallBody,
    ConversationInitiationMetadata,
    ErrorBody,
    ErrorEvent,
    InitiationMetadataBody,
    InternalTentativeAgentResponse,
    Interruption,
    InterruptionBody,
    Ping,
    PingBody,
    ServerEvent,
    TentativeAgentResponseBody,
    TentativeUserTranscript,
    UserTranscript,
    UserTranscriptBody,
    VadScore,
    VadScoreBody,
)
from kioskd.simulator.faults import MALFORMED_KINDS, AgentFaults, MalformedKind
from kioskd.simulator.records import ChangeSignal, Conversation, PongRecord, TurnRecord
from kioskd.simulator.settings import SimulatorConfig
from kioskd.simulator.speech import synth_speech
from kioskd.simulator.tokens import TokenStore
from kioskd.simulator.turns import FRAME_MS, FrameSplitter, TurnDetector, VadScoreWindow

__all__ = ["CONVERSATION_PATH", "AgentServer"]

log = logging.getLogger(__name__)
websocket_fix.install()  # no pong after our own Close (trio-websocket #184)

CONVERSATION_PATH: Final = "/v1/convai/conversation"
VAD_RATE: Final = 16000
#: How long the agent waits for the client's half of a closing handshake.
CLOSE_TIMEOUT: Final = 2.0


@dataclass
class _Close:
    """Queue item: close the conversation with this code once everything before it is sent."""

    code: int
    reason: str


@dataclass
class _InterruptMarker:
    """Queue item: an ``interruption`` with ``event_id`` (None: the last audio id actually sent)."""

    event_id: int | None


@dataclass
class _AudioItem:
    """Queue item: one agent audio chunk of ``reply``."""

    reply: _Reply
    event: AudioEvent


@dataclass
class _Malformed:
    """Queue item: a deliberately broken event."""

    kind: str
    text: str


@dataclass
class _Reply:
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


_Outgoing = ServerEvent | _Close | _InterruptMarker | _AudioItem | _Malformed


class AgentServer:
    """Serves simulated conversations and keeps their records."""

    def __init__(
        self,
        config: SimulatorConfig,
        tokens: TokenStore,
        faults: AgentFaults,
        changes: ChangeSignal,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.faults = faults
        self.changes = changes
        self.conversations: list[Conversation] = []
        #: Connections refused: (time, reason).
        self.rejected: list[tuple[float, str]] = []
        self.port = 0
        self._ids = itertools.count(1)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``config.host:config.port`` until cancelled; reports the bound port."""
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    serve_websocket,
                    self._handle,
                    self.config.host,
                    self.config.port,
                    None,
                    max_message_size=self.config.max_message_size,
                    disconnect_timeout=CLOSE_TIMEOUT,
                )
            )
            self.port = server.port
            log.info("simulated agent listening port=%d", self.port)
            task_status.started(self.port)

    async def _handle(self, request: WebSocketRequest) -> None:
        """One connection; never lets an error escape into the server."""
        try:
            await self._serve(request)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("simulated agent: conversation handler failed")

    async def _serve(self, request: WebSocketRequest) -> None:
        url = urlsplit(request.path)
        if url.path.rstrip("/") != CONVERSATION_PATH:
            self._reject(f"unknown path {url.path}")
            await request.reject(404, body=b"not found")
            return
        query = parse_qs(url.query)
        agent_id = query.get("agent_id", [""])[0]
        token = query.get("token", [None])[0]
        ws = await request.accept()
        problem = self._authorise(agent_id, token)
        if problem is not None:
            self._reject(problem)
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose(1008, problem)
            return
        record = Conversation(
            conversation_id=f"conv_sim_{next(self._ids)}",
            agent_id=agent_id,
            input_format=self.config.input_format,
            output_format=self.config.output_format,
            started_at=trio.current_time(),
        )
        self.conversations.append(record)
        self.changes.notify()
        session = _Session(ws, record, self.config, self.faults, self.changes)
        self.faults._targets.add(session)
        try:
            await session.run()
        finally:
            self.faults._targets.discard(session)
            record.finish(trio.current_time(), None, "connection lost")
            self.changes.notify()

    def _authorise(self, agent_id: str, token: str | None) -> str | None:
        if agent_id not in self.config.agent_ids:
            return "unknown agent"
        if token is None:
            return "missing token" if self.config.require_token else None
        return self.tokens.check(token, agent_id, trio.current_time())

    def _reject(self, reason: str) -> None:
        log.info("simulated agent: refused connection reason=%s", reason)
        self.rejected.append((trio.current_time(), reason))
        self.changes.notify()


class _Session:
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
        self._out_send, self._out_recv = trio.open_memory_channel[_Outgoing](math.inf)
        self._ids = _EventIds(config.event_ids)
        self._events = frozenset(config.client_events)
        self._first_message = config.first_message
        self._ping_sent: dict[int, float] = {}
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
        self._reply: _Reply | None = None
        self._reply_scope: trio.CancelScope | None = None
        self._tool_calls = itertools.count(1)
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Client data, metadata, the greeting, then serve until the conversation ends."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._sender)
            first = await self._first_message_in()
            if first is _CLOSED:
                nursery.cancel_scope.cancel()
                return
            if isinstance(first, (str, bytes)):
                first = self._take_client_data(first)
                if first is _CLOSED:
                    return
            self.record.client_events = self._events
            body = InitiationMetadataBody(
                conversation_id=self.record.conversation_id,
                agent_output_audio_format=self.out_fmt.name,
                user_input_audio_format=self.in_fmt.name,
            )
            self._send(ConversationInitiationMetadata(conversation_initiation_metadata_event=body))
            if first is not None:
                await self._on_message(first)
            if self._first_message:
                self.record.greeting = self._first_message
                self._start_reply(self._first_message, self._ids.new_turn(), seed=GREETING_SEED)
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
            self._send(ErrorEvent(error_event=ErrorBody(
                code=1008, message=text, error_type="override_error", reason=text,
                debug_message=f"conversation_config_override.{name} is not enabled in the agent's security settings",
            )))
            self._out_send.send_nowait(_Close(1008, text))
            return _CLOSED
        conversation = override.conversation
        if conversation is not None and conversation.client_events:
            self._events = frozenset(conversation.client_events)
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
        self._out_send.send_nowait(_Close(code, reason))

    def fault_malformed(self, count: int, kind: MalformedKind) -> None:
        """Queue ``count`` malformed events."""
        kinds = MALFORMED_KINDS if kind == "mixed" else (kind,)
        for i in range(count):
            kind_i = kinds[i % len(kinds)]
            self._out_send.send_nowait(_Malformed(kind_i, _malformed(kind_i, self._ids.next_ping())))

    def fault_raw(self, text: str) -> None:
        """Queue ``text`` to be sent as it is."""
        self._out_send.send_nowait(_Malformed(RAW, text))

    # ------------------------------------------------------------------ outgoing

    def _send(self, event: ServerEvent) -> None:
        """Queue ``event`` if this conversation's client events include its type ("error" always)."""
        kind = event.__struct_config__.tag
        if kind in self._events or kind in _ALWAYS_SENT:
            self._out_send.send_nowait(event)

    async def _sender(self) -> None:
        """Sends queued messages in order, applying the delay and stall faults."""
        async for item in self._out_recv:
            if self.faults.delay > 0:
                await trio.sleep(self.faults.delay)
            if isinstance(item, _Close):  # an explicit close beats a stall
                await self._close(item.code, item.reason)
                return
            now = trio.current_time()
            if self.faults.stall:
                if isinstance(item, _AudioItem) and item.reply.first_sent is None:
                    item.reply.first_sent = now  # lost audio still "plays" (and ends)
                continue
            event: ServerEvent | None = None
            text, kind, event_id = "", "", None  # (of a raw or malformed item; an event's are derived below)
            if isinstance(item, _AudioItem):
                if item.reply.interrupted:
                    continue
                if item.reply.first_sent is None:
                    item.reply.first_sent = now
                event = item.event
                self._ids.last_audio = item.event.audio_event.event_id
                self.record.audio_event_ids.append(self._ids.last_audio)
            elif isinstance(item, _InterruptMarker):
                cut = self._ids.last_audio if item.event_id is None else item.event_id
                event = Interruption(interruption_event=InterruptionBody(event_id=cut))
                self.record.interruptions.append(cut)
            elif isinstance(item, _Malformed):
                text, kind, event_id = item.text, "raw" if item.kind == RAW else f"malformed:{item.kind}", None
            else:
                event = item
            if event is not None:
                text, kind, event_id = codec.encode(event), str(event.__struct_config__.tag), _event_id(event)
            if kind == "ping" and event_id is not None:
                self._ping_sent[event_id] = now
            try:
                await self.ws.send_message(text)
            except ConnectionClosed as exc:
                self._closed_by_peer(exc)
                return
            self.record.sent_types.append(kind)
            self.record.sent.append((kind, event_id))
            self.changes.notify()

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
            self._send(ErrorEvent(error_event=ErrorBody(code=1008, message=text, error_type="invalid_message")))
            self._out_send.send_nowait(_Close(1008, text))
            return
        rec = self.record
        self._record_message(message, data, now)
        if isinstance(message, UserAudioChunk):
            self._on_audio(message.user_audio_chunk, now)
        elif isinstance(message, Pong):
            sent = self._ping_sent.pop(message.event_id, None)
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
                self._answer(message.text, 0, self._ids.new_turn(), now)
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
                if score is not None and "vad_score" in self._events:
                    self.record.vad_scores.append(score)
                    self._send(VadScore(vad_score_event=VadScoreBody(vad_score=score)))
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
                self._answer(transcript, end.speech_ms, self._visitor_turn(), now)
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
        self._send(TentativeUserTranscript(tentative_user_transcription_event=body))

    def _maybe_interrupt(self, now: float) -> None:
        reply = self._reply
        if reply is None or not reply.speaking(now):
            return
        reply.interrupted = True
        if self._reply_scope is not None:
            self._reply_scope.cancel()
        if "interruption" not in self._events:
            return
        # per-turn ids: the interruption carries the interrupting turn's id (its reply shares it)
        self._out_send.send_nowait(_InterruptMarker(None if self._ids.mode == "message" else self._visitor_turn()))
        played = 0.0 if reply.first_sent is None else min(1.0, (now - reply.first_sent) / reply.seconds)
        words = reply.text.split()
        cut = " ".join(words[: int(len(words) * played)]) + "..."
        self._send(
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

    # ------------------------------------------------------------------ agent turns

    def _answer(self, transcript: str, speech_ms: int, event_id: int, now: float) -> None:
        """The visitor's turn ``event_id`` ended with ``transcript``: the agent replies (same id)."""
        turn_index = len(self.record.turns)
        goodbye = self.config.end_call is not None and _says_goodbye(transcript, self.config.goodbye_words)
        text = self.config.goodbye if goodbye else self.config.replies[turn_index % len(self.config.replies)]
        self.record.turns.append(TurnRecord(now, transcript if speech_ms else None, speech_ms, text))
        if speech_ms:
            body = UserTranscriptBody(user_transcript=transcript, event_id=event_id)
            self._send(UserTranscript(user_transcription_event=body))
        self._start_reply(text, event_id, seed=turn_index, turn_index=turn_index, goodbye=goodbye)

    def _start_reply(self, text: str, event_id: int, *, seed: int, turn_index: int | None = None,
                     goodbye: bool = False) -> None:
        if self._reply_scope is not None:
            self._reply_scope.cancel()
        tentative = " ".join(text.split()[:3])
        self._send(InternalTentativeAgentResponse(
            tentative_agent_response_internal_event=TentativeAgentResponseBody(tentative_agent_response=tentative)))
        self._send(AgentResponse(agent_response_event=AgentResponseBody(agent_response=text, event_id=event_id)))
        seconds = 0.0 if self.record.text_only else self.config.reply_seconds
        reply = _Reply(text, seconds, event_id)
        self._reply = reply
        scope = trio.CancelScope()
        self._reply_scope = scope
        assert self._nursery is not None
        self._nursery.start_soon(self._speak, reply, seed, turn_index, goodbye, scope)

    async def _speak(self, reply: _Reply, seed: int, turn_index: int | None, goodbye: bool,
                     scope: trio.CancelScope) -> None:
        """Queue the reply (audio in chunks, faster than real time, or text parts); then its tool call."""
        with scope:
            when = self.config.end_call if goodbye else None
            if when == "before":
                self._call_end_call(reply)
            if self.record.text_only:
                self._send_text_parts(reply)
            else:
                samples = synth_speech(reply.seconds, self.out_fmt.rate, seed=seed)
                step = max(1, self.out_fmt.rate * self.config.reply_chunk_ms // 1000)
                pause = self.config.reply_chunk_ms / 1000 / max(self.config.reply_speedup, 1e-6)
                starts = range(0, len(samples), step)
                for n, start in enumerate(starts):
                    if when == "during" and n == len(starts) // 2:
                        self._call_end_call(reply)
                    chunk = samples[start : start + step]
                    body = AudioBody(
                        audio_base_64=encode(chunk, self.out_fmt), event_id=self._ids.audio_id(reply.event_id),
                        alignment=self._alignment(reply, start, len(chunk)) if self.config.alignment else None,
                    )
                    if "audio" in self._events:
                        self._out_send.send_nowait(_AudioItem(reply, AudioEvent(audio_event=body)))
                    await trio.sleep(pause)
            if when == "after":
                self._call_end_call(reply)
            if turn_index == 0 and self.config.tool_call is not None and not self.record.tool_calls:
                name, params = self.config.tool_call
                call_id = f"toolu_sim_{next(self._tool_calls)}"
                self.record.tool_calls.append(call_id)
                self._send(
                    ClientToolCall(
                        client_tool_call=ClientToolCallBody(
                            tool_name=name, tool_call_id=call_id, parameters=dict(params), event_id=reply.event_id
                        )
                    )
                )


    def _send_text_parts(self, reply: _Reply) -> None:
        """A text-only reply streams as agent_chat_response_part start, deltas, stop."""
        parts = [("start", "")] + [("delta", w + " ") for w in reply.text.split()] + [("stop", "")]
        for kind, text in parts:
            body = ChatResponsePartBody(text=text, type=kind, event_id=reply.event_id)
            self._out_send.send_nowait(AgentChatResponsePart(text_response_part=body))

    def _alignment(self, reply: _Reply, start: int, length: int) -> Alignment:
        """The characters spoken in samples [start, start+length) of the reply, evenly spread."""
        rate = self.out_fmt.rate
        per_char = reply.seconds * 1000 / max(len(reply.text), 1)
        begin, end = start * 1000 / rate, (start + length) * 1000 / rate
        first, last = math.ceil(begin / per_char), math.ceil(end / per_char)
        chars = list(reply.text[first:last])
        starts: list[float] = [round(i * per_char - begin) for i in range(first, first + len(chars))]
        durations: list[float] = [round(per_char)] * len(chars)  # whole milliseconds, as the schema's integers
        return Alignment(chars=chars, char_start_times_ms=starts, char_durations_ms=durations)

    def _call_end_call(self, reply: _Reply) -> None:
        """The agent runs its end_call system tool; it closes the call itself once the goodbye has played."""
        self.record.end_calls.append(trio.current_time())
        self._send(AgentToolResponse(agent_tool_response=AgentToolResponseBody(
            tool_name="end_call", tool_call_id=f"toolu_end_{next(self._tool_calls)}", tool_type="system",
            is_error=False, is_called=True, event_id=reply.event_id)))
        assert self._nursery is not None
        self._nursery.start_soon(self._close_after_goodbye, reply)

    async def _close_after_goodbye(self, reply: _Reply) -> None:
        while reply.first_sent is None and not self.record.text_only:
            await trio.sleep(self.config.reply_chunk_ms / 1000)
        if reply.first_sent is not None:
            await trio.sleep_until(reply.first_sent + reply.seconds)
        await trio.sleep(self.config.end_call_close_after)
        self._out_send.send_nowait(_Close(1000, "the agent ended the call"))

    # ------------------------------------------------------------------ timers

    async def _pinger(self) -> None:
        while True:
            await trio.sleep(self.config.ping_interval)
            if self.faults.stall:
                continue
            self._send(Ping(ping_event=PingBody(event_id=self._ids.next_ping(), ping_ms=self._last_rtt_ms)))

    async def _silence_watchdog(self) -> None:
        while True:
            deadline = self._last_user_audio + self.config.silence_timeout
            if trio.current_time() >= deadline:
                if self.faults.stall:
                    self._last_user_audio = trio.current_time()
                    continue
                text = f"No user input received for {self.config.silence_timeout:g} seconds"
                if self.config.silence_error:
                    self._send(ErrorEvent(error_event=ErrorBody(
                        code=1002, message=text, error_type="transport_receive_timeout", reason="timeout")))
                self._out_send.send_nowait(_Close(1002, "no user audio received"))
                return
            await trio.sleep_until(deadline)

    async def _max_duration(self) -> None:
        await trio.sleep(self.config.max_duration)
        self._send(
            ErrorEvent(
                error_event=ErrorBody(
                    code=1000, message="maximum conversation duration reached", error_type="max_duration_exceeded"
                )
            )
        )
        self._out_send.send_nowait(_Close(1000, "maximum duration reached"))


class _EventIds:
    """Event ids as the service gives them ("turn") or one per message, shared with pings ("message")."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._turns = itertools.count(1)
        self._pings = itertools.count(1) if mode == "turn" else self._turns
        self.last_audio = 0

    def new_turn(self) -> int:
        """The id of a new turn (a visitor's utterance or message; the agent's greeting)."""
        return next(self._turns)

    def audio_id(self, turn: int) -> int:
        """The id of one audio chunk of the reply in ``turn``."""
        return turn if self.mode == "turn" else next(self._turns)

    def next_ping(self) -> int:
        return next(self._pings)


_CLOSED: Final = object()
#: Events sent whatever the client events say ("error" is not a ClientEvent; the metadata opens every conversation).
_ALWAYS_SENT: Final = frozenset({"error", "conversation_initiation_metadata"})
#: The kind of a _Malformed item that is sent as it is (AgentFaults.send_raw).
RAW: Final = "raw"
#: The greeting's audio (turns use their index as the seed).
GREETING_SEED: Final = 1000


def _says_goodbye(text: str, words: tuple[str, ...]) -> bool:
    said = {w.strip(".,!?;:'\"").lower() for w in text.split()}
    return any(w.lower() in said for w in words)


def _event_id(event: ServerEvent) -> int | None:
    """The event id an event carries, if any."""
    for name in event.__struct_fields__:
        body = getattr(event, name)
        event_id = getattr(body, "event_id", None)
        if isinstance(event_id, int):
            return event_id
    return None


def _malformed(kind: str, event_id: int) -> str:
    """One malformed server event of ``kind``."""
    if kind == "json":
        return '{"type":"audio","audio_event":{"audio_base_64":"AAAA","event_id":'
    if kind == "type":
        return '{"type":"audio","audio_event":{"audio_base_64":"AAAA","event_id":"seven"}}'
    if kind == "base64":
        return '{"type":"audio","audio_event":{"audio_base_64":"%not*base64%","event_id":' + f"{event_id}}}}}"
    return '{"type":"sim_unknown_event","sim_unknown_event":{"event_id":' + f"{event_id}}}}}"

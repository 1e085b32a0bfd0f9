"""The simulated Conversational AI agent: a protocol-faithful WebSocket server on loopback.

One :class:`AgentServer` serves ``/v1/convai/conversation?agent_id=…&token=…``; each
connection runs as one :class:`_Session` that records what it sees in a
:class:`~kioskd.simulator.records.Conversation`. Turn-taking decisions come from the pure
:mod:`kioskd.simulator.turns`; every outgoing message goes through one queue so the
delay and stall faults apply to all of it in order.
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

from kioskd import protocol as p
from kioskd import websocket_fix
from kioskd.audio.formats import AudioFormat, decode, encode
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
    """Queue item: an ``interruption`` whose event id is the last audio id actually sent."""


@dataclass
class _AudioItem:
    """Queue item: one agent audio chunk of ``reply``."""

    reply: _Reply
    event_id: int
    audio: bytes


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
    first_sent: float | None = None
    interrupted: bool = False

    def speaking(self, now: float) -> bool:
        """The agent is still talking (its audio, played in real time, has not run out)."""
        if self.interrupted:
            return False
        return self.first_sent is None or now < self.first_sent + self.seconds


_Outgoing = str | _Close | _InterruptMarker | _AudioItem | _Malformed


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
        self._event_ids = itertools.count(1)
        self._ping_sent: dict[int, float] = {}
        self._last_rtt_ms: int | None = None
        self._last_audio_id = 0
        self._last_user_audio = record.started_at
        self._vad = webrtcvad.Vad(config.vad_mode)
        self._resampler = (
            None if self.in_fmt.rate == VAD_RATE else soxr.ResampleStream(self.in_fmt.rate, VAD_RATE, 1, dtype="int16")
        )
        self._frames = FrameSplitter(VAD_RATE * FRAME_MS // 1000)
        self._turns = TurnDetector(config.end_of_speech_ms)
        self._scores = VadScoreWindow(config.vad_score_ms) if config.vad_score_ms > 0 else None
        self._reply: _Reply | None = None
        self._reply_scope: trio.CancelScope | None = None
        self._tool_calls = itertools.count(1)
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Metadata first, then serve until the conversation ends."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._sender)
            first = await self._first_message()
            if first is _CLOSED:
                nursery.cancel_scope.cancel()
                return
            body = p.InitiationMetadataBody(
                conversation_id=self.record.conversation_id,
                agent_output_audio_format=self.out_fmt.name,
                user_input_audio_format=self.in_fmt.name,
            )
            self._send(p.ConversationInitiationMetadata(conversation_initiation_metadata_event=body))
            if first is not None:
                await self._on_message(first)
            nursery.start_soon(self._receiver)
            nursery.start_soon(self._pinger)
            nursery.start_soon(self._silence_watchdog)
            nursery.start_soon(self._max_duration)

    async def _first_message(self) -> str | bytes | object | None:
        """The client's first message if it comes within ``client_data_wait``."""
        with trio.move_on_after(self.config.client_data_wait):
            try:
                return await self.ws.get_message()
            except ConnectionClosed as exc:
                self._closed_by_peer(exc)
                return _CLOSED
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
            self._out_send.send_nowait(_Malformed(kind_i, _malformed(kind_i, next(self._event_ids))))

    # ------------------------------------------------------------------ outgoing

    def _send(self, event: p.ServerEvent) -> None:
        self._out_send.send_nowait(p.encode(event))

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
            if isinstance(item, _AudioItem):
                if item.reply.interrupted:
                    continue
                if item.reply.first_sent is None:
                    item.reply.first_sent = now
                text = p.encode(p.AudioEvent(audio_event=p.AudioBody(audio_base_64=item.audio, event_id=item.event_id)))
                self._last_audio_id = item.event_id
                self.record.audio_event_ids.append(item.event_id)
            elif isinstance(item, _InterruptMarker):
                text = p.encode(p.Interruption(interruption_event=p.InterruptionBody(event_id=self._last_audio_id)))
                self.record.interruptions.append(self._last_audio_id)
            elif isinstance(item, _Malformed):
                text = item.text
            else:
                text = item
            kind = f"malformed:{item.kind}" if isinstance(item, _Malformed) else _type_of(text)
            if kind == "ping":
                self._ping_sent[_ping_id(text)] = now
            try:
                await self.ws.send_message(text)
            except ConnectionClosed as exc:
                self._closed_by_peer(exc)
                return
            self.record.sent_types.append(kind)
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

    async def _on_message(self, data: str | bytes | object) -> None:
        assert isinstance(data, (str, bytes))
        now = trio.current_time()
        try:
            message = p.decode_client_message(data)
        except p.ProtocolError as exc:
            log.info("simulated agent: invalid client message id=%s error=%s", self.record.conversation_id, exc)
            await self._close(1008, f"invalid message: {exc}"[:120])
            return
        rec = self.record
        rec.messages.append((now, message))
        if isinstance(message, p.UserAudioChunk):
            self._on_audio(message.user_audio_chunk, now)
        elif isinstance(message, p.Pong):
            sent = self._ping_sent.pop(message.event_id, None)
            rtt = None if sent is None else now - sent
            if rtt is not None:
                self._last_rtt_ms = round(rtt * 1000)
            rec.pongs.append(PongRecord(message.event_id, now, rtt))
        elif isinstance(message, p.ConversationInitiationClientData):
            rec.client_data = message
        elif isinstance(message, p.ClientToolResult):
            rec.tool_results.append(message)
        elif isinstance(message, p.ContextualUpdate):
            rec.contextual_updates.append(message.text)
        elif isinstance(message, p.UserMessage):
            rec.user_messages.append(message.text)
            self._start_reply(None, 0, now)
        elif isinstance(message, p.UserActivity):
            rec.user_activity.append(now)
        self.changes.notify()

    def _on_audio(self, raw: bytes, now: float) -> None:
        pcm = decode(raw, self.in_fmt)
        self.record.add_audio(raw, pcm)
        self._last_user_audio = now
        pcm16 = pcm if self._resampler is None else self._resampler.resample_chunk(pcm)
        for frame in self._frames.feed(pcm16):
            speech = self._vad.is_speech(frame.tobytes(), VAD_RATE)
            if self._scores is not None:
                score = self._scores.feed(speech)
                if score is not None:
                    self.record.vad_scores.append(score)
                    self._send(p.VadScore(vad_score_event=p.VadScoreBody(vad_score=score)))
            end = self._turns.feed(speech)
            if self._turns.speech_ms >= self.config.barge_in_ms:
                self._maybe_interrupt(now)
            if end is not None:
                self._start_reply(self._transcript(end.speech_ms), end.speech_ms, now)

    def _maybe_interrupt(self, now: float) -> None:
        reply = self._reply
        if reply is None or not reply.speaking(now):
            return
        reply.interrupted = True
        if self._reply_scope is not None:
            self._reply_scope.cancel()
        self._out_send.send_nowait(_InterruptMarker())
        if self.config.send_corrections:
            played = 0.0 if reply.first_sent is None else min(1.0, (now - reply.first_sent) / reply.seconds)
            words = reply.text.split()
            cut = " ".join(words[: int(len(words) * played)]) + "..."
            self._send(
                p.AgentResponseCorrection(
                    agent_response_correction_event=p.AgentResponseCorrectionBody(
                        original_agent_response=reply.text, corrected_agent_response=cut
                    )
                )
            )

    def _transcript(self, speech_ms: int) -> str:
        index = len(self.record.turns)
        if index < len(self.config.transcripts):
            return self.config.transcripts[index]
        return f"(simulated transcript: {speech_ms / 1000:.1f} s of speech)"

    # ------------------------------------------------------------------ agent turns

    def _start_reply(self, transcript: str | None, speech_ms: int, now: float) -> None:
        if self._reply_scope is not None:
            self._reply_scope.cancel()
        turn_index = len(self.record.turns)
        text = self.config.replies[turn_index % len(self.config.replies)]
        self.record.turns.append(TurnRecord(now, transcript, speech_ms, text))
        if transcript is not None:
            self._send(p.UserTranscript(user_transcription_event=p.UserTranscriptBody(user_transcript=transcript)))
        if self.config.send_tentative:
            tentative = " ".join(text.split()[:3])
            self._send(
                p.InternalTentativeAgentResponse(
                    tentative_agent_response_internal_event=p.TentativeAgentResponseBody(tentative_agent_response=tentative)
                )
            )
        self._send(p.AgentResponse(agent_response_event=p.AgentResponseBody(agent_response=text)))
        reply = _Reply(text, self.config.reply_seconds)
        self._reply = reply
        scope = trio.CancelScope()
        self._reply_scope = scope
        assert self._nursery is not None
        self._nursery.start_soon(self._speak, reply, turn_index, scope)

    async def _speak(self, reply: _Reply, turn_index: int, scope: trio.CancelScope) -> None:
        """Queue the reply's audio in chunks, faster than real time; then the scripted tool call."""
        with scope:
            samples = synth_speech(reply.seconds, self.out_fmt.rate, seed=turn_index)
            step = max(1, self.out_fmt.rate * self.config.reply_chunk_ms // 1000)
            pause = self.config.reply_chunk_ms / 1000 / max(self.config.reply_speedup, 1e-6)
            for start in range(0, len(samples), step):
                chunk = encode(samples[start : start + step], self.out_fmt)
                self._out_send.send_nowait(_AudioItem(reply, next(self._event_ids), chunk))
                await trio.sleep(pause)
            if turn_index == 0 and self.config.tool_call is not None and not self.record.tool_calls:
                name, params = self.config.tool_call
                call_id = f"toolu_sim_{next(self._tool_calls)}"
                self.record.tool_calls.append(call_id)
                self._send(
                    p.ClientToolCall(
                        client_tool_call=p.ClientToolCallBody(
                            tool_name=name, tool_call_id=call_id, parameters=dict(params)
                        )
                    )
                )

    # ------------------------------------------------------------------ timers

    async def _pinger(self) -> None:
        while True:
            await trio.sleep(self.config.ping_interval)
            if self.faults.stall:
                continue
            event_id = next(self._event_ids)
            self._send(p.Ping(ping_event=p.PingBody(event_id=event_id, ping_ms=self._last_rtt_ms)))

    async def _silence_watchdog(self) -> None:
        while True:
            deadline = self._last_user_audio + self.config.silence_timeout
            if trio.current_time() >= deadline:
                if self.faults.stall:
                    self._last_user_audio = trio.current_time()
                    continue
                self._out_send.send_nowait(_Close(1002, "no user audio received"))
                return
            await trio.sleep_until(deadline)

    async def _max_duration(self) -> None:
        await trio.sleep(self.config.max_duration)
        self._send(
            p.ErrorEvent(
                error_event=p.ErrorBody(
                    code=1000, message="maximum conversation duration reached", error_type="max_duration_exceeded"
                )
            )
        )
        self._out_send.send_nowait(_Close(1000, "maximum duration reached"))


_CLOSED: Final = object()


def _type_of(text: str) -> str:
    """The ``type`` of an outgoing message, cheaply ("malformed" when it has none)."""
    marker = '"type":"'
    start = text.find(marker)
    if start < 0:
        return "malformed"
    start += len(marker)
    return text[start : text.find('"', start)]


def _ping_id(text: str) -> int:
    decoded = p.decode_server_event(text)
    assert isinstance(decoded, p.Ping)
    return decoded.ping_event.event_id


def _malformed(kind: str, event_id: int) -> str:
    """One malformed server event of ``kind``."""
    if kind == "json":
        return '{"type":"audio","audio_event":{"audio_base_64":"AAAA","event_id":'
    if kind == "type":
        return '{"type":"audio","audio_event":{"audio_base_64":"AAAA","event_id":"seven"}}'
    if kind == "base64":
        return '{"type":"audio","audio_event":{"audio_base_64":"%not*base64%","event_id":' + f"{event_id}}}}}"
    return '{"type":"sim_unknown_event","sim_unknown_event":{"event_id":' + f"{event_id}}}}}"

"""One conversation on one WebSocket.

A :class:`Session` opens the socket, sends ``conversation_initiation_client_data``
first, learns the audio formats from ``conversation_initiation_metadata``, streams
the microphone, plays the agent, answers pings and tool calls at once, and watches
the link. It never raises for a network or protocol fault: :meth:`Session.run`
returns a :class:`SessionOutcome` saying how the conversation ended and whether the
supervisor may resume it on a new connection.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import ssl
import struct
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio
import trio_websocket

from kioskd.audio.formats import AudioFormat
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
    ErrorEvent,
    InternalTentativeAgentResponse,
    Interruption,
    Ping,
    Pong,
    ProtocolError,
    ServerEvent,
    TtsOverride,
    UnknownEvent,
    UserAudioChunk,
    UserTranscript,
    VadScore,
    decode_server_event,
    encode,
)
from kioskd.state import KioskState, StatusBoard
from kioskd.tools import END_CONVERSATION, ToolRegistry

__all__ = ["Session", "SessionOutcome", "client_data", "describe_close"]

log = logging.getLogger(__name__)

#: Longest wait for our close handshake before the socket is simply dropped.
CLOSE_TIMEOUT = 2.0
#: A stalled link gets no close handshake: nothing would come back, and recovery must not wait.
STALLED_CLOSE_TIMEOUT = 0.0
#: How often the session refreshes speaking/listening flags and checks its timers.
PUMP_INTERVAL = 0.05
#: A server vad_score at or above this counts as the visitor speaking (keeps the idle timer alive).
VAD_ACTIVITY = 0.5
#: How long the agent's last words may keep playing after it ended the conversation.
DRAIN_LIMIT = 15.0
#: Messages trio-websocket may queue before its reader stops (it then stops answering pings).
MESSAGE_QUEUE = 256
#: SO_SNDBUF of the agent socket. Microphone audio is 16 kHz int16 = 32 kB/s, ~43 kB/s as
#: base64 in JSON, so 16 KiB holds ~380 ms (Linux doubles the figure for its bookkeeping,
#: which small segments mostly use up). The kernel default (hundreds of KB on Wi-Fi, MBs on
#: loopback) would swallow many seconds of audio on a thin link before ``send_message``
#: blocked, hiding the backlog from the uplink buffer, whose bound and speech-first drops
#: then never engaged while audio arrived seconds late. 16 KiB still keeps 20 ms messages
#: flowing over a ~300 ms round trip.
SEND_BUFFER = 16 * 1024
#: The link is congested while more than this many bytes sit in the socket not yet sent
#: (Linux SIOCOUTQNSD, ~50 ms of audio): the sender then takes no audio from the uplink, so
#: the backlog stays in the uplink buffer (coalesced, bounded, silence dropped first), and
#: the trio-websocket send lock is free for pongs and close frames.
CONGESTED_BYTES = 2048
#: How often the sender looks again while the link is congested.
CONGESTION_POLL = 0.01
#: ioctl: bytes in a TCP socket's send queue not yet sent (Linux, include/uapi/linux/sockios.h).
SIOCOUTQNSD = 0x894B

#: Close codes (NOTES): what they mean, and whether the conversation may be resumed.
CLOSE_CODES: dict[int, tuple[str, bool]] = {
    1000: ("the agent ended the conversation", False),
    1001: ("the server is going away", True),
    1002: ("the agent closed it: timeout or failure (e.g. no user input)", False),
    1006: ("the connection dropped without a close frame", True),
    1008: ("the agent rejected the conversation: invalid input or authorisation", False),
    1011: ("the agent hit an internal error", True),
    1012: ("the agent server is restarting", True),
    1013: ("the agent server asked to try again later", True),
    1014: ("a gateway in front of the agent failed", True),
}
#: Application close codes (4000-4999) carry no meaning we know: the agent ended it on purpose.
APPLICATION_CODES = range(4000, 5000)


def describe_close(code: int | None) -> tuple[str, bool]:
    """``(meaning, resumable)`` for a WebSocket close code (None: dropped without a close frame).

    Only link and server faults are resumable; an end the agent chose (1000, 1002, 1008,
    4000-range, anything unknown) is not, so a kiosk never loops reopening a conversation
    the agent closed on purpose.
    """
    if code is None:
        return CLOSE_CODES[1006]
    if code in APPLICATION_CODES:
        return f"the agent closed it with application code {code}", False
    return CLOSE_CODES.get(code, (f"closed with code {code}", False))


@dataclass
class SessionOutcome:
    """How a session ended. ``resumable`` means a link fault the supervisor may recover from."""

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
    tool_calls: int = 0
    congested_waits: int = 0


class Uplink(Protocol):
    """Microphone audio for one conversation (see :mod:`kioskd.audio.engine`)."""

    def set_format(self, fmt: AudioFormat) -> None: ...
    async def receive(self) -> bytes: ...
    def close(self) -> None: ...


class Playback(Protocol):
    """Agent audio for one conversation (see :mod:`kioskd.audio.engine`)."""

    speaking: bool

    def push(self, event_id: int, data: bytes) -> None: ...
    def interrupt(self, event_id: int) -> None: ...
    def close(self) -> None: ...


class AudioPort(Protocol):
    """What a session needs of the audio engine."""

    mic_enabled: bool

    def open_playback(self, fmt: AudioFormat) -> Playback: ...


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
    variables = {"kiosk_id": config.kiosk.id, "kiosk_location": config.kiosk.location}
    variables.update(agent.dynamic_variables)
    return ConversationInitiationClientData(
        conversation_config_override=override if override != ConversationConfigOverride() else None,
        dynamic_variables=variables,
    )


def _parse_format(name: str, direction: str) -> AudioFormat:
    try:
        return AudioFormat.parse(name)
    except ValueError:
        log.warning("unknown %s audio format %r from the agent; assuming pcm_16000", direction, name)
        return AudioFormat.parse("pcm_16000")


class Session:
    """One conversation. Create, then ``await run(url)``; call :meth:`end` to finish it."""

    def __init__(
        self,
        config: Config,
        audio: AudioPort,
        uplink: Uplink,
        tools: ToolRegistry,
        board: StatusBoard,
        *,
        context: str | None = None,
        observers: Sequence[Callable[[ServerEvent | UnknownEvent], None]] = (),
    ) -> None:
        self._config = config
        self._audio = audio
        self._uplink = uplink
        self._tools = tools
        self._board = board
        self._context = context
        self._observers = tuple(observers)
        self.stats = SessionStats()
        self.conversation_id: str | None = None
        self._transcript: deque[str] = deque(maxlen=max(config.conversation.context_lines, 1))
        self._outcome: SessionOutcome | None = None
        self._scope: trio.CancelScope | None = None
        self._playback: Playback | None = None
        self._sending = False
        self._opened_at = 0.0
        self._last_heard = 0.0
        self._last_activity = 0.0
        self._close_code = 1000
        self._close_timeout = CLOSE_TIMEOUT
        self._socket: socket.socket | None = None

    # ------------------------------------------------------------------ public

    def end(self, reason: str = "ended by request") -> None:
        """Finish the conversation cleanly (close 1000). Safe to call at any time, more than once."""
        self._finish(SessionOutcome(reason))

    def note_activity(self) -> None:
        """The visitor or the agent did something: restart the idle timer."""
        self._last_activity = trio.current_time()

    @property
    def transcript(self) -> list[str]:
        """The latest transcript lines ("Visitor: …", "Agent: …"), oldest first."""
        return list(self._transcript)

    async def run(
        self,
        url: str,
        *,
        connect_timeout: float | None = None,
        claim: Callable[[], bool] | None = None,
    ) -> SessionOutcome:
        """Hold the conversation until it ends; never raises for network or protocol faults.

        ``connect_timeout`` bounds the WebSocket handshake (default ``network.connect_timeout``).
        ``claim`` is asked once the handshake is done: False means another attempt already
        won (the supervisor races attempts while resuming), and this one closes at once,
        before anything is sent, so no conversation is started on the server.
        """
        net = self._config.network
        timeout = net.connect_timeout if connect_timeout is None else connect_timeout
        now = trio.current_time()
        self._opened_at = self._last_heard = self._last_activity = now
        try:
            async with trio.open_nursery() as nursery:  # holds trio-websocket's reader task
                try:
                    with trio.fail_after(timeout):
                        host, resource, stream = await _open_stream(url)
                        self._socket = _raw_socket(stream)
                        ws = await trio_websocket.wrap_client_stream(
                            nursery,
                            stream,
                            host,
                            resource,
                            message_queue_size=MESSAGE_QUEUE,
                            max_message_size=net.max_message_bytes,
                        )
                except trio.TooSlowError:
                    self._finish(SessionOutcome(f"no connection within {timeout:g} s", resumable=True))
                except trio_websocket.ConnectionRejected as exc:
                    self._finish(_rejected_outcome(exc))
                except (trio_websocket.HandshakeError, OSError, trio.BrokenResourceError) as exc:
                    self._finish(SessionOutcome(f"cannot connect: {_describe_exc(exc)}", resumable=True))
                except ValueError as exc:  # a URL trio-websocket cannot use
                    self._finish(SessionOutcome(f"unusable conversation URL: {type(exc).__name__}", resumable=True))
                else:
                    if claim is not None and not claim():
                        self._close_timeout = 0.0
                        self._finish(SessionOutcome("superseded by another connection attempt"))
                    self._opened_at = self._last_heard = self._last_activity = trio.current_time()
                    try:
                        await self._converse(ws)
                    finally:
                        await self._close(ws)
                nursery.cancel_scope.cancel()
        except* trio_websocket.ConnectionRejected as group:  # raised by trio-websocket's reader task
            self._finish(_rejected_outcome(group.exceptions[0]))
        except* trio_websocket.ConnectionClosed as group:
            exc = group.exceptions[0]
            assert isinstance(exc, trio_websocket.ConnectionClosed)
            self._finish(_closed_outcome(exc.reason.code if exc.reason is not None else None))
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
            self._finish(SessionOutcome(f"connection lost: {_describe_exc(group.exceptions[0])}", resumable=True))
        except* Exception as group:  # a bug must end this conversation, never the daemon
            log.error("session failed id=%s", self.conversation_id, exc_info=group.exceptions[0])
            self._finish(SessionOutcome(f"internal error: {type(group.exceptions[0]).__name__}"))
        finally:
            self._stop_audio()
        outcome = self._outcome or SessionOutcome("ended")
        outcome.conversation_id = self.conversation_id
        outcome.opened = self.conversation_id is not None
        outcome.transcript = self.transcript
        return outcome

    # ------------------------------------------------------------------ internals

    def _finish(self, outcome: SessionOutcome) -> None:
        if self._outcome is None:
            self._outcome = outcome
        if self._scope is not None:
            self._scope.cancel()

    async def _close(self, ws: trio_websocket.WebSocketConnection) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
            try:
                await ws.aclose(self._close_code)
            except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, OSError):
                pass

    def _stop_audio(self) -> None:
        self._sending = False
        if self._playback is not None:
            self._playback.close()
            self._playback = None
        self._board.update(agent_speaking=False, mic_live=False)

    async def _converse(self, ws: trio_websocket.WebSocketConnection) -> None:
        """Run the conversation's tasks until one of them (or :meth:`end`) finishes it.

        Only this inner scope is cancelled then: the socket's reader must live on for
        the close handshake.
        """
        if self._outcome is not None:
            return  # ended while connecting
        await ws.send_message(encode(client_data(self._config)))
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            nursery.start_soon(self._receive_loop, ws, nursery)
            nursery.start_soon(self._keepalive, ws)
            nursery.start_soon(self._watch)

    async def _receive_loop(self, ws: trio_websocket.WebSocketConnection, nursery: trio.Nursery) -> None:
        while True:
            try:
                data = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                code = exc.reason.code if exc.reason is not None else None
                if code == 1000 and self._playback is not None:
                    await self._drain()
                outcome = _closed_outcome(code)
                log.info("conversation closed id=%s code=%s reason=%r", self.conversation_id, code, outcome.reason)
                self._finish(outcome)
                return
            self._last_heard = trio.current_time()
            try:
                event = decode_server_event(data)
            except ProtocolError as exc:
                self.stats.malformed += 1
                log.warning("malformed server message skipped id=%s error=%r", self.conversation_id, str(exc)[:200])
                continue
            try:
                await self._handle(event, ws, nursery)
                for observer in self._observers:
                    observer(event)
            except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                raise  # the link is gone: run() turns this into the outcome
            except Exception:  # one bad event must not end the conversation
                self.stats.malformed += 1
                log.exception("server event could not be handled id=%s type=%s",
                              self.conversation_id, type(event).__name__)

    async def _handle(self, event: object, ws: trio_websocket.WebSocketConnection, nursery: trio.Nursery) -> None:
        match event:
            case AudioEvent(audio_event=body):
                self.stats.audio_events += 1
                self.note_activity()
                if self._playback is not None:
                    self._playback.push(body.event_id, body.audio_base_64)
            case Ping(ping_event=body):
                await ws.send_message(encode(Pong(event_id=body.event_id)))
                self.stats.pings += 1
                self.stats.last_ping_ms = body.rtt_ms()
            case VadScore(vad_score_event=body):
                self._board.update(vad_score=body.vad_score)
                if body.vad_score >= VAD_ACTIVITY:
                    self.note_activity()
            case Interruption(interruption_event=body):
                self.stats.interruptions += 1
                if self._playback is not None:
                    self._playback.interrupt(body.event_id)
                log.info("agent interrupted id=%s event_id=%d", self.conversation_id, body.event_id)
            case UserTranscript(user_transcription_event=body):
                self.note_activity()
                self._transcript.append(f"Visitor: {body.user_transcript}")
                log.info("visitor said id=%s text=%r", self.conversation_id, body.user_transcript)
            case AgentResponse(agent_response_event=body):
                self._transcript.append(f"Agent: {body.agent_response}")
                log.info("agent said id=%s text=%r", self.conversation_id, body.agent_response)
            case AgentResponseCorrection(agent_response_correction_event=body):
                self._correct(body.original_agent_response, body.corrected_agent_response)
                log.info("agent corrected id=%s text=%r", self.conversation_id, body.corrected_agent_response)
            case ClientToolCall(client_tool_call=body):
                self.stats.tool_calls += 1
                result, is_error = self._tools.call(body.tool_name, body.parameters)
                await ws.send_message(encode(ClientToolResult(body.tool_call_id, result, is_error)))
                log.info(
                    "tool call id=%s tool=%s is_error=%s", self.conversation_id, body.tool_name, is_error
                )
                if body.tool_name == END_CONVERSATION and not is_error:
                    nursery.start_soon(self._end_after_playback)
            case ContextualUpdate(text=text):
                log.info("agent context update id=%s text=%r", self.conversation_id, text[:200])
            case InternalTentativeAgentResponse(tentative_agent_response_internal_event=body):
                log.debug("agent drafting id=%s text=%r", self.conversation_id, body.tentative_agent_response)
            case ErrorEvent(error_event=body):
                log.warning(
                    "agent reported an error id=%s code=%s type=%s message=%r",
                    self.conversation_id, body.code, body.error_type, body.message,
                )
            case ConversationInitiationMetadata(conversation_initiation_metadata_event=body):
                await self._on_metadata(body.conversation_id, body.user_input_audio_format,
                                        body.agent_output_audio_format, ws, nursery)
            case UnknownEvent(type=kind):
                self.stats.unknown += 1
                log.warning("unknown server event skipped id=%s type=%s", self.conversation_id, kind[:80])

    def _correct(self, original: str, corrected: str) -> None:
        for i in range(len(self._transcript) - 1, -1, -1):
            if self._transcript[i] == f"Agent: {original}":
                self._transcript[i] = f"Agent: {corrected}"
                return

    async def _on_metadata(
        self, conversation_id: str, input_format: str, output_format: str,
        ws: trio_websocket.WebSocketConnection, nursery: trio.Nursery,
    ) -> None:
        if self.conversation_id is not None:
            log.warning("repeated conversation metadata ignored id=%s", self.conversation_id)
            return
        self.conversation_id = conversation_id or "unknown"
        up = _parse_format(input_format, "input")
        down = _parse_format(output_format, "output")
        log.info("conversation open id=%s input=%s output=%s", self.conversation_id, up.name, down.name)
        self._uplink.set_format(up)
        self._playback = self._audio.open_playback(down)
        self._board.update(state=KioskState.CONVERSATION, reason="", conversation_id=self.conversation_id)
        if self._context:
            await ws.send_message(encode(ContextualUpdate(text=self._context)))
        nursery.start_soon(self._send_microphone, ws)

    async def _send_microphone(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._sending = True
        try:
            while True:
                await self._wait_for_room()
                chunk = await self._uplink.receive()
                # Privacy: the listening light is switched on (synchronously, by the board's
                # listeners) before microphone audio leaves the kiosk, never after.
                self._board.update(mic_live=self._audio.mic_enabled)
                await ws.send_message(encode(UserAudioChunk(user_audio_chunk=chunk)))
                self.stats.chunks_sent += 1
        finally:
            self._sending = False

    async def _wait_for_room(self) -> None:
        """Return once the socket can take a message without queueing audio in the kernel.

        Why wait here rather than bound each send with a timeout: cancelling ``send_message``
        part-way leaves half a frame on the wire, which ends the connection; and skipping a
        chunk would drop audio without regard to speech. Waiting *before* taking audio from
        the uplink leaves the backlog where it is coalesced into larger messages and, past
        its bound, dropped silence first. Each send then fits in the socket at once, so it
        holds trio-websocket's send lock only briefly and pongs are not queued behind
        seconds of audio. A link that stops moving altogether is caught by the stall
        watchdog (nothing heard for ``stall_timeout``), not here.
        """
        while (unsent := _unsent_bytes(self._socket)) is not None and unsent > CONGESTED_BYTES:
            self.stats.congested_waits += 1
            await trio.sleep(CONGESTION_POLL)

    async def _keepalive(self, ws: trio_websocket.WebSocketConnection) -> None:
        """WebSocket pings: a pong (like any message) proves the link is alive."""
        net = self._config.network
        while True:
            with trio.move_on_after(net.stall_timeout):
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    return
                self._last_heard = max(self._last_heard, trio.current_time())
            await trio.sleep(net.ws_ping_interval)

    async def _watch(self) -> None:
        """Dead link, idle and maximum-length timers, and the speaking/listening flags.

        Wakes every PUMP_INTERVAL, or exactly at the stall deadline if that comes first,
        so a stall is detected ``stall_timeout`` after the last byte heard, not later.
        """
        conv = self._config.conversation
        stall = self._config.network.stall_timeout
        while True:
            now = trio.current_time()
            speaking = self._playback is not None and self._playback.speaking
            if speaking:
                self._last_activity = now
            self._board.update(agent_speaking=speaking, mic_live=self._sending and self._audio.mic_enabled)
            if now - self._last_heard >= stall:
                log.warning("link stalled id=%s silent_for=%.1fs", self.conversation_id, now - self._last_heard)
                self._close_code = 1001
                self._close_timeout = STALLED_CLOSE_TIMEOUT
                self._finish(SessionOutcome(f"link stalled: nothing heard for {stall:g} s", resumable=True))
                return
            if now - self._last_activity >= conv.idle_timeout:
                self._finish(SessionOutcome(f"no speech from visitor or agent for {conv.idle_timeout:g} s"))
                return
            if now - self._opened_at >= conv.max_duration:
                self._finish(SessionOutcome(f"maximum length of {conv.max_duration:g} s reached"))
                return
            await trio.sleep_until(min(now + PUMP_INTERVAL, self._last_heard + stall))

    async def _drain(self) -> None:
        """Let the agent's last words play out (bounded)."""
        with trio.move_on_after(DRAIN_LIMIT):
            while self._playback is not None and self._playback.speaking:
                await trio.sleep(PUMP_INTERVAL)

    async def _end_after_playback(self) -> None:
        await trio.sleep(PUMP_INTERVAL)  # let the agent's goodbye start arriving
        await self._drain()
        self.end("the agent ended the conversation (end_conversation tool)")


def _closed_outcome(code: int | None) -> SessionOutcome:
    """The outcome of a close with ``code`` (None: dropped without a close frame)."""
    meaning, resumable = describe_close(code)
    return SessionOutcome(meaning, resumable=resumable, rejected=code == 1008, close_code=code)


def _rejected_outcome(exc: BaseException) -> SessionOutcome:
    status = getattr(exc, "status_code", None)
    return SessionOutcome(f"the agent server refused the connection (HTTP {status})", rejected=True)


async def _open_stream(url: str) -> tuple[str, str, trio.SocketStream | trio.SSLStream[trio.SocketStream]]:
    """Open TCP (and TLS for ``wss://``) to the URL's host: ``(Host header, resource, stream)``.

    Done here rather than by trio-websocket so the socket's send buffer can be kept small
    (:data:`SEND_BUFFER`). TLS uses the system's trust store with SNI and hostname checking.
    ValueError for a URL that is not ``ws://`` or ``wss://`` with a host.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError("WebSocket URL scheme must be ws: or wss:")
    host = parts.hostname
    if not host:
        raise ValueError("WebSocket URL has no host")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)  # .port raises ValueError when out of range
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    name = f"[{host}]" if ":" in host else host
    host_header = name if port == (443 if secure else 80) else f"{name}:{port}"
    tcp = await trio.open_tcp_stream(host, port)
    try:
        _limit_send_buffer(tcp.socket)
        if not secure:
            return host_header, resource, tcp
        tls = trio.SSLStream(tcp, ssl.create_default_context(), server_hostname=host, https_compatible=True)
        await tls.do_handshake()  # here, so a certificate problem is reported as one
        return host_header, resource, tls
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise


def _limit_send_buffer(sock: trio.socket.SocketType) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    except OSError as exc:  # not fatal: the link works, only with more hidden latency
        log.warning("cannot set the agent socket's send buffer error=%s", exc)


def _raw_socket(stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> socket.socket | None:
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    return inner.socket if isinstance(inner, trio.SocketStream) else None  # type: ignore[return-value]


def _unsent_bytes(sock: socket.socket | trio.socket.SocketType | None) -> int | None:
    """Bytes queued in the socket but not yet sent (Linux); None where this cannot be asked."""
    if sock is None or sock.fileno() < 0:
        return None
    try:
        out = fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, struct.pack("i", 0))
    except OSError:
        return None
    return int(struct.unpack("i", out)[0])


def _describe_exc(exc: BaseException) -> str:
    if isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, ssl.SSLError):
        exc = exc.__cause__
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    cause = exc.__cause__
    if isinstance(exc, trio_websocket.HandshakeError) and cause is not None:
        exc = cause
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text

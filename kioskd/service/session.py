"""One conversation on one WebSocket: the driver that pumps link ↔ conversation ↔ audio.

A :class:`Session` opens the link (:mod:`kioskd.service.link`), feeds what arrives and
the time into a :class:`~kioskd.conversation.Conversation` (which holds every rule),
and carries out its actions: messages out, audio to the speaker, fields on the
status board, the end. Its own tasks are the reader, the keepalive pings, the
microphone sender and the watch loop that ticks the conversation. It never raises for
a network or protocol fault: :meth:`Session.run` returns a
:class:`~kioskd.conversation.SessionOutcome`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import trio
import trio_websocket

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
from kioskd.close_codes import closed_outcome
from kioskd.config import Config
from kioskd.conversation import Conversation, NotNow, VisitorMessage
from kioskd.protocol.client_messages import UserAudioChunk
from kioskd.protocol.codec import ProtocolError, decode_server_event, encode
from kioskd.protocol.server_events import ServerEvent, UnknownEvent
from kioskd.service.link import Link, describe_exc, open_link
from kioskd.service.ports import AudioPort, MicPort, SpeakerPort
from kioskd.state import StatusBoard
from kioskd.tools import ToolRegistry

__all__ = ["Session"]

log = logging.getLogger(__name__)

#: How often the session refreshes the speaking/listening flags and ticks the conversation.
PUMP_INTERVAL = 0.05
#: Visitor messages (``kioskd ctl say`` …) waiting to be sent; more are refused.
OUTBOX = 16
#: The link errors that end a conversation (everything else in a handler is a bug, survived).
LINK_ERRORS = (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)


class Session:
    """One conversation. Create, then ``await run(url)``; call :meth:`end` to finish it."""

    def __init__(
        self,
        config: Config,
        audio: AudioPort,
        uplink: MicPort,
        tools: ToolRegistry,
        board: StatusBoard,
        *,
        context: str | None = None,
        observers: Sequence[Callable[[ServerEvent | UnknownEvent], None]] = (),
    ) -> None:
        self._config = config
        self._audio = audio
        self._uplink = uplink
        self._board = board
        self._observers = tuple(observers)
        self.conversation = Conversation(config, tools, context=context)
        self._link: Link | None = None
        self._tasks: trio.Nursery | None = None
        self._playback: SpeakerPort | None = None
        self._sending = False
        #: the microphone sender's current wait (cancelled by StopMic), and whether it stopped for good
        self._mic_wait: trio.CancelScope | None = None
        self._mic_stopped = False
        #: when the conversation is next ticked, and the watch loop's wait for it
        self._next_tick = -math.inf
        self._watch_wait = trio.CancelScope()
        self._outbox, self._outbox_out = trio.open_memory_channel[list[Action]](OUTBOX)

    @property
    def stats(self) -> SessionStats:
        """The conversation's counters."""
        return self.conversation.stats

    @property
    def conversation_id(self) -> str | None:
        """The agent's id for this conversation, once it opened."""
        return self.conversation.conversation_id

    @property
    def transcript(self) -> list[str]:
        """The latest transcript lines, oldest first."""
        return self.conversation.transcript

    def end(self, reason: str = "ended by request") -> None:
        """Finish the conversation cleanly (close 1000). Safe to call at any time, more than once."""
        self._act(self.conversation.end(reason))

    def visitor_message(self, kind: VisitorMessage, text: str = "") -> None:
        """Send the agent a visitor's feedback, text, context or activity (soon, in order).

        Raises :class:`~kioskd.conversation.NotNow` saying why it cannot be sent now.
        """
        actions = self.conversation.visitor_message(kind, text)
        try:
            self._outbox.send_nowait(actions)
        except trio.WouldBlock:
            raise NotNow("too many messages waiting to be sent") from None

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
        try:
            async with trio.open_nursery() as nursery:  # holds trio-websocket's reader task
                link = await self._open(url, nursery, connect_timeout)
                if link is not None:
                    if claim is not None and not claim():
                        self._fail(SessionOutcome("superseded by another connection attempt"), close_timeout=0.0)
                    try:
                        await self._converse(link)
                    finally:
                        await self._close(link)
                nursery.cancel_scope.cancel()
        except* trio_websocket.ConnectionRejected as group:  # raised by trio-websocket's reader task
            self._fail(_rejected_outcome(_first(group)))
        except* trio_websocket.ConnectionClosed as group:
            exc = _first(group)
            assert isinstance(exc, trio_websocket.ConnectionClosed)
            self._fail(closed_outcome(_close_code(exc)))
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
            self._fail(SessionOutcome(f"connection lost: {describe_exc(_first(group))}", resumable=True))
        except* Exception as group:  # a bug must end this conversation, never the daemon
            log.error("session failed id=%s", self.conversation_id, exc_info=_first(group))
            self._fail(SessionOutcome(f"internal error: {type(_first(group)).__name__}"))
        finally:
            self._stop_audio()
        return self.conversation.result()

    # ------------------------------------------------------------------ the link

    async def _open(self, url: str, nursery: trio.Nursery, connect_timeout: float | None) -> Link | None:
        net = self._config.network
        timeout = net.connect_timeout if connect_timeout is None else connect_timeout
        try:
            with trio.fail_after(timeout):
                return await open_link(url, nursery, max_message_bytes=net.max_message_bytes)
        except trio.TooSlowError:
            self._fail(SessionOutcome(f"no connection within {timeout:g} s", resumable=True))
        except trio_websocket.ConnectionRejected as exc:
            self._fail(_rejected_outcome(exc))
        except (trio_websocket.HandshakeError, OSError, trio.BrokenResourceError) as exc:
            self._fail(SessionOutcome(f"cannot connect: {describe_exc(exc)}", resumable=True))
        except ValueError as exc:  # a URL trio-websocket cannot use
            self._fail(SessionOutcome(f"unusable conversation URL: {type(exc).__name__}", resumable=True))
        return None

    async def _close(self, link: Link) -> None:
        ending = self.conversation.ending or End(SessionOutcome("ended"))
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(ending.close_timeout),
            contextlib.suppress(trio_websocket.ConnectionClosed, trio.BrokenResourceError, OSError),
        ):
            await link.ws.aclose(ending.close_code)

    def _fail(self, outcome: SessionOutcome, *, close_timeout: float = CLOSE_TIMEOUT) -> None:
        self._act(self.conversation.finish(outcome, close_timeout=close_timeout))

    # ------------------------------------------------------------------ the conversation's tasks

    async def _converse(self, link: Link) -> None:
        """Run the conversation's tasks until it ends (only this inner scope is cancelled then:
        the socket's reader must live on for the close handshake)."""
        self._link = link
        await self._apply(self.conversation.connected(trio.current_time()))
        if self.conversation.ending is not None:
            return  # ended while connecting or introducing itself
        async with trio.open_nursery() as nursery:
            self._tasks = nursery
            nursery.start_soon(self._receive_loop, link.ws)
            nursery.start_soon(self._keepalive, link.ws)
            nursery.start_soon(self._watch)
            nursery.start_soon(self._send_outbox)

    async def _receive_loop(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            try:
                data = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                reason = exc.reason.reason if exc.reason is not None else None
                self._act(self.conversation.closed(_close_code(exc), trio.current_time(), reason))
                self._tick(trio.current_time())  # a drain ends at once when nothing is playing
                return
            now = trio.current_time()
            try:
                event = decode_server_event(data)
            except ProtocolError as exc:
                self.conversation.malformed(exc, now)
                continue
            try:
                await self._apply(self.conversation.receive(event, now))
                for observer in self._observers:
                    observer(event)
            except LINK_ERRORS:
                raise  # the link is gone: run() turns this into the outcome
            except Exception:  # one bad event must not end the conversation
                self.stats.malformed += 1
                log.exception("server event could not be handled id=%s type=%s",
                              self.conversation_id, type(event).__name__)

    async def _keepalive(self, ws: trio_websocket.WebSocketConnection) -> None:
        """WebSocket pings: a pong (like any message) proves the link is alive."""
        net = self._config.network
        while True:
            with trio.move_on_after(net.stall_timeout):
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    return
                self.conversation.heard(trio.current_time())
            await trio.sleep(net.ws_ping_interval)

    async def _watch(self) -> None:
        """Tick the conversation every PUMP_INTERVAL, or exactly at its next deadline if sooner.

        While the microphone sender ticks (after a message, once half of PUMP_INTERVAL has
        passed), each of its ticks moves this wait on, so the watch itself wakes only when
        nothing else ticked in time: no wake-up of its own during a conversation.
        """
        while self._tick(trio.current_time()):
            with trio.CancelScope(deadline=self._next_tick) as self._watch_wait:
                await trio.sleep_forever()

    def _tick(self, now: float) -> bool:
        """Refresh the speaking/listening flags and tick; False once the conversation has ended.

        The kiosk's own microphone VAD counts as the visitor talking, and its level drives
        the light while the agent sends no vad_score (the service's default events have none).
        """
        speaking = self._playback is not None and self._playback.speaking
        self._board.update(agent_speaking=speaking, mic_live=self._sending and self._audio.mic_enabled)
        listening = self._sending and self._audio.mic_enabled
        self._act(self.conversation.tick(
            now, speaking=speaking, visitor_at=self._uplink.speech_at if listening else None,
            voice_level=self._uplink.voice_level if listening else 0.0,
        ))
        self._next_tick = min(now + PUMP_INTERVAL, self.conversation.deadline)
        self._watch_wait.deadline = self._next_tick
        return self.conversation.ending is None

    async def _send_outbox(self) -> None:
        async for actions in self._outbox_out:
            await self._apply(actions)

    def _mic_stop_requested(self) -> bool:
        return self._mic_stopped

    async def _send_microphone(self, link: Link) -> None:
        self._sending = not self._mic_stopped
        try:
            while not self._mic_stopped:
                # Only the waits are cancellable (StopMic): a send cut part-way would break the link.
                with trio.CancelScope() as self._mic_wait:
                    self.stats.congested_waits += await link.wait_for_room()
                    chunk = await self._uplink.receive()
                if self._mic_stop_requested():  # StopMic may have come while we waited
                    return
                # Privacy: the listening light is switched on (synchronously, by the board's
                # listeners) before microphone audio leaves the kiosk, never after.
                self._board.update(mic_live=self._audio.mic_enabled)
                await link.send_text(encode(UserAudioChunk(user_audio_chunk=chunk)))
                self.stats.chunks_sent += 1
                if (now := trio.current_time()) >= self._next_tick - PUMP_INTERVAL / 2:
                    self._tick(now)  # here, in the wake-up the message took anyway, before the watch's (see _watch)
        except trio_websocket.ConnectionClosed:
            return  # the agent closed the link (e.g. while its goodbye plays): the reader reports it
        finally:
            self._sending = False

    # ------------------------------------------------------------------ actions

    async def _apply(self, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                assert self._link is not None
                await self._link.ws.send_message(encode(action.message))
            else:
                self._act([action])

    def _act(self, actions: Iterable[Action]) -> None:
        """Carry out the actions that need no waiting (a Send here is a bug)."""
        for action in actions:
            match action:
                case Play(event_id=event_id, audio=audio):
                    if self._playback is not None:
                        self._playback.push(event_id, audio)
                case Interrupt(event_id=event_id):
                    if self._playback is not None:
                        self._playback.interrupt(event_id)
                case Show(changes=changes):
                    self._board.update(**changes)
                case OpenAudio(input=up, output=down):
                    assert self._link is not None and self._tasks is not None
                    self._uplink.set_format(up)
                    self._playback = self._audio.open_playback(down)
                    self._tasks.start_soon(self._send_microphone, self._link)
                case StopMic():
                    self._mic_stopped = True
                    if self._mic_wait is not None:
                        self._mic_wait.cancel()
                    self._sending = False
                    self._board.update(mic_live=False)
                case End():
                    if self._tasks is not None:
                        self._tasks.cancel_scope.cancel()
                case Send():
                    raise AssertionError("a Send must be awaited (use _apply)")

    def _stop_audio(self) -> None:
        self._sending = False
        if self._playback is not None:
            self._playback.close()
            self._playback = None
        self._board.update(agent_speaking=False, mic_live=False)


def _close_code(exc: trio_websocket.ConnectionClosed) -> int | None:
    return exc.reason.code if exc.reason is not None else None


def _rejected_outcome(exc: BaseException) -> SessionOutcome:
    status = getattr(exc, "status_code", None)
    return SessionOutcome(f"the agent server refused the connection (HTTP {status})", rejected=True)


def _first(group: BaseExceptionGroup[Any]) -> Any:
    """The first leaf exception of a (possibly nested) exception group: nested nurseries nest groups."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc

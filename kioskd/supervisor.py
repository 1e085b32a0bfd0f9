"""Idle ↔ connecting ↔ conversation ↔ reconnecting: the kiosk's one decision-maker.

Triggers send :class:`~kioskd.state.Command` values; the supervisor starts and ends
conversations, fetches URLs, retries with backoff and, when a link dies mid-conversation,
opens a new conversation within the grace window and tells the agent what was said so
far. It is the only writer of ``StatusBoard.state``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import trio

from kioskd.backend.client import SignedUrlError, UrlSource
from kioskd.backoff import Backoff
from kioskd.config import Config
from kioskd.protocol import ServerEvent, UnknownEvent
from kioskd.session import AudioPort, Session, SessionOutcome, Uplink
from kioskd.state import Command, KioskState, StatusBoard
from kioskd.tools import ToolRegistry

__all__ = ["Supervisor", "resume_context"]

log = logging.getLogger(__name__)

#: Commands queued beyond this are dropped (with a log line): a stuck button must not pile up.
COMMAND_QUEUE = 16
#: While resuming a broken conversation, retries stay this close together so the kiosk is
#: back within a second of the network's return.
RESUME_BACKOFF_BASE = 0.25
RESUME_BACKOFF_CAP = 1.0
#: How often the idle state is refreshed from the backend's health (also the heartbeat).
IDLE_REFRESH = 0.5
#: The supervisor counts as healthy while its heartbeat is younger than this (systemd watchdog).
HEARTBEAT_LIMIT = 5.0


class SupervisedAudio(AudioPort, Protocol):
    """What the supervisor needs of the audio engine beyond a session's needs."""

    def open_uplink(self) -> Uplink: ...
    def play_cue(self, name: str) -> None: ...


def resume_context(transcript: list[str]) -> str:
    """The ``contextual_update`` that lets the agent pick up a conversation after a dropped link."""
    if not transcript:
        return "The connection dropped and was restored; the visitor is still here. Continue the conversation."
    lines = "\n".join(transcript)
    return (
        "The connection dropped and was restored; the visitor is still here. "
        "Continue the conversation without starting over. The conversation so far:\n" + lines
    )


class Supervisor:
    """Runs conversations on request, forever. Start with ``nursery.start(supervisor.run)``."""

    def __init__(
        self,
        config: Config,
        audio: SupervisedAudio,
        board: StatusBoard,
        urls: UrlSource,
        tools: ToolRegistry,
    ) -> None:
        self.config = config
        self._audio = audio
        self._board = board
        self._urls = urls
        self._tools = tools
        self._send, self._receive = trio.open_memory_channel[Command](COMMAND_QUEUE)
        self._session: Session | None = None
        self._in_conversation = False
        self._error: str | None = None
        self.counters = {"conversations": 0, "resumed": 0, "failed_starts": 0, "dropped_commands": 0}
        self.last_outcome: SessionOutcome | None = None
        #: called with every server event of every conversation (the demo prints them)
        self.observers: list[Callable[[ServerEvent | UnknownEvent], None]] = []
        self._heartbeat = trio.current_time()
        self._idle = trio.Event()

    # ------------------------------------------------------------------ public

    def command(self, cmd: Command) -> None:
        """Ask for something (from the Trio thread). Never blocks; drops when flooded."""
        try:
            self._send.send_nowait(cmd)
        except trio.WouldBlock:
            self.counters["dropped_commands"] += 1
            log.warning("command dropped: queue full command=%s", cmd)

    def set_tools(self, tools: ToolRegistry) -> None:
        """Use a new tool registry from the next tool call on (config reload)."""
        self._tools = tools

    def healthy(self) -> bool:
        """True while the supervisor's loop is turning (the systemd watchdog asks)."""
        return trio.current_time() - self._heartbeat < HEARTBEAT_LIMIT

    async def end_and_wait(self) -> None:
        """End the running conversation cleanly and wait until the kiosk is idle."""
        if not self._in_conversation:
            return
        self.command(Command.END)
        await self._idle.wait()

    def details(self) -> dict[str, Any]:
        """Extra status for ``kioskd ctl status``."""
        session = self._session
        out: dict[str, Any] = {
            "backend": {"healthy": self._urls.healthy, "last_error": self._urls.last_error},
            "counters": dict(self.counters),
        }
        if session is not None:
            out["session"] = vars(session.stats).copy()
        if self.last_outcome is not None:
            out["last_end"] = self.last_outcome.reason
        return out

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wait for a start command, hold the conversation, repeat. Never returns."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._refresh_idle_state)
            task_status.started()
            async for cmd in self._receive:
                if cmd in (Command.START, Command.TOGGLE):
                    await self._conversation()
                elif cmd in (Command.MIC_ON, Command.MIC_OFF):
                    log.debug("ignored while idle command=%s", cmd)

    # ------------------------------------------------------------------ idle

    def _idle_state(self) -> tuple[KioskState, str]:
        if self._error is not None:
            return KioskState.ERROR, self._error
        if not self._urls.healthy:
            return KioskState.OFFLINE, f"backend unreachable: {self._urls.last_error}"
        return KioskState.IDLE, ""

    async def _refresh_idle_state(self) -> None:
        while True:
            self._heartbeat = trio.current_time()
            if not self._in_conversation:
                state, reason = self._idle_state()
                self._board.update(state=state, reason=reason, conversation_id=None, vad_score=0.0)
            await trio.sleep(IDLE_REFRESH)

    # ------------------------------------------------------------------ conversation

    async def _conversation(self) -> None:
        self._in_conversation = True
        self._idle = trio.Event()
        self._audio.mic_enabled = True
        self.counters["conversations"] += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._commands_during_conversation, nursery.cancel_scope)
                await self._hold_conversation()
                nursery.cancel_scope.cancel()
        finally:
            self._session = None
            self._in_conversation = False
            self._idle.set()
            self._audio.mic_enabled = True
            state, reason = self._idle_state()
            self._board.update(state=state, reason=reason, conversation_id=None, vad_score=0.0)

    async def _commands_during_conversation(self, scope: trio.CancelScope) -> None:
        async for cmd in self._receive:
            if cmd in (Command.END, Command.TOGGLE):
                session = self._session
                if session is not None and session.conversation_id is not None:
                    session.end("ended by the visitor or operator")
                else:
                    log.info("start abandoned by request")
                    scope.cancel()
            elif cmd is Command.MIC_ON:
                self._audio.mic_enabled = True
            elif cmd is Command.MIC_OFF:
                self._audio.mic_enabled = False

    async def _hold_conversation(self) -> None:
        """Connect, converse, and resume after link faults until the conversation really ends."""
        grace = self.config.conversation.reconnect_grace
        backoff = Backoff(RESUME_BACKOFF_BASE, RESUME_BACKOFF_CAP)
        uplink = self._audio.open_uplink()  # captures from the trigger on: nothing said is lost
        deadline = trio.current_time() + max(grace, self.config.network.connect_timeout)
        context: str | None = None
        transcript: list[str] = []
        resuming = False
        try:
            while True:
                state = KioskState.RECONNECTING if resuming else KioskState.CONNECTING
                self._board.update(state=state, reason="", conversation_id=None)
                outcome = await self._attempt(uplink, context)
                if outcome is None:  # no URL: backend trouble
                    if trio.current_time() >= deadline:
                        self.counters["failed_starts"] += 1
                        return
                    await trio.sleep(min(backoff.next_delay(), max(0.0, deadline - trio.current_time())))
                    continue
                self.last_outcome = outcome
                transcript = outcome.transcript or transcript
                if outcome.opened:
                    self._error = None
                    backoff.reset()
                    if resuming:
                        self.counters["resumed"] += 1
                    deadline = trio.current_time() + grace
                elif outcome.rejected:
                    self._error = outcome.reason
                log.info("conversation ended id=%s reason=%r", outcome.conversation_id, outcome.reason)
                if not outcome.resumable or grace <= 0 or trio.current_time() >= deadline:
                    return
                resuming = resuming or outcome.opened
                context = resume_context(transcript) if resuming else None
                self._board.update(state=KioskState.RECONNECTING, reason=outcome.reason, conversation_id=None)
                self._audio.play_cue("reconnecting")
                uplink.close()
                uplink = self._audio.open_uplink()  # audio from the outage is not replayed
                await trio.sleep(backoff.next_delay())
        finally:
            uplink.close()

    async def _attempt(self, uplink: Uplink, context: str | None) -> SessionOutcome | None:
        try:
            url = await self._urls.take()
        except SignedUrlError as exc:
            log.warning("no conversation URL: %s", exc)
            if exc.kind in ("unauthorized", "forbidden"):
                self._error = str(exc)
            self._board.update(reason=str(exc))
            return None
        session = Session(
            self.config, self._audio, uplink, self._tools, self._board, context=context, observers=self.observers
        )
        self._session = session
        try:
            return await session.run(url)
        finally:
            self._session = None


"""Idle ↔ connecting ↔ conversation ↔ reconnecting: the kiosk's one decision-maker.

Triggers send :class:`~kioskd.state.Command` values; the supervisor starts and ends
conversations, fetches URLs, retries with backoff and, when a link dies mid-conversation,
opens a new conversation within the grace window and tells the agent what was said so
far. It is the only writer of ``StatusBoard.state``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from kioskd.actions import SessionOutcome
from kioskd.backend.client import REJECTED_KINDS, SignedUrlError, UrlSource
from kioskd.backoff import Backoff
from kioskd.config import Config
from kioskd.conversation import NotNow
from kioskd.events import EventBus
from kioskd.protocol.server_events import (
    AgentResponse,
    ConversationInitiationMetadata,
    ServerEvent,
    UnknownEvent,
    UserTranscript,
)
from kioskd.service.ports import MicPort, SupervisedAudio
from kioskd.service.race import Race
from kioskd.service.resume_policy import Next, after_outcome, resume_context
from kioskd.service.session import Session
from kioskd.state import Command, KioskState, StatusBoard
from kioskd.tools import ToolRegistry

__all__ = ["VISITOR_MESSAGES", "Supervisor"]

log = logging.getLogger(__name__)

#: What :meth:`Supervisor.visitor_message` passes on (conversation.VisitorMessage).
VISITOR_MESSAGES = ("feedback", "say", "context", "activity")
#: Commands queued beyond this are dropped (with a log line): a stuck button must not pile up.
COMMAND_QUEUE = 16
#: How long a visitor's start may keep retrying (backend errors, failed connects) before
#: the kiosk gives up and shows offline/error with the reason.
START_WINDOW = 15.0
#: While resuming, a new attempt (URL fetch or connection) starts this often even if
#: earlier ones still hang, and each is bounded by RESUME_ATTEMPT_TIMEOUT; at most
#: RESUME_ATTEMPTS are in flight (RESUME_ATTEMPTS * RESUME_INTERVAL >= the timeout, so a
#: slot is always free). An attempt that hangs on a dead network cannot hold the kiosk
#: back: one started after the network's return wins within RESUME_INTERVAL plus setup.
RESUME_INTERVAL = 0.25
RESUME_ATTEMPT_TIMEOUT = 2.0
RESUME_ATTEMPTS = 8
#: Attempts that fail fast (refused, unreachable) are paced by this backoff while resuming;
#: its cap keeps the kiosk within a second of the network's return.
RESUME_BACKOFF_BASE = 0.1
RESUME_BACKOFF_CAP = 0.5
#: While reconnecting, the "reconnecting" cue repeats this often so the visitor knows to wait.
CUE_REPEAT = 5.0
#: How often the idle state is refreshed from the backend's health (also the heartbeat).
IDLE_REFRESH = 1.0
#: The supervisor counts as healthy while its heartbeat is younger than this (systemd watchdog).
HEARTBEAT_LIMIT = 5.0


class Supervisor:
    """Runs conversations on request, forever. Start with ``nursery.start(supervisor.run)``."""

    def __init__(
        self,
        config: Config,
        audio: SupervisedAudio,
        board: StatusBoard,
        urls: UrlSource,
        tools: ToolRegistry,
        *,
        rng: random.Random | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.config = config
        self.events = events or EventBus()
        #: why the kiosk is out of service (``ctl close``, opening hours); None: open
        self.closed: str | None = None
        #: played (and awaited) before each conversation connects: the privacy notice
        self.notice: Callable[[], Awaitable[None]] | None = None
        self._rng = rng or random.Random()
        self._audio = audio
        self._board = board
        self._urls = urls
        self._tools = tools
        self._send, self._receive = trio.open_memory_channel[Command](COMMAND_QUEUE)
        self._session: Session | None = None
        self._in_conversation = False
        self._error: str | None = None
        #: the backend refused this kiosk (401/403): an error until it gives a URL again
        self._backend_error: str | None = None
        #: why the latest start gave up (shown with the idle state until the next start)
        self._start_failure: str | None = None
        self.counters = {
            "conversations": 0, "resumed": 0, "failed_starts": 0, "failed_resumes": 0, "dropped_commands": 0,
        }
        self.last_outcome: SessionOutcome | None = None
        #: called with every server event of every conversation (the demo prints them)
        self.observers: list[Callable[[ServerEvent | UnknownEvent], None]] = []
        self._heartbeat = trio.current_time()
        self._idle = trio.Event()
        self._opened_any = False

    # ------------------------------------------------------------------ public

    def command(self, cmd: Command) -> None:
        """Ask for something (from the Trio thread). Never blocks; drops when flooded."""
        try:
            self._send.send_nowait(cmd)
        except trio.WouldBlock:
            self.counters["dropped_commands"] += 1
            log.warning("command dropped: queue full command=%s", cmd)

    def reload(self, config: Config, tools: ToolRegistry) -> None:
        """Use new settings and tools from the next conversation (or tool call) on."""
        self.config = config
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

    def visitor_message(self, kind: str, text: str = "") -> str | None:
        """Send the open conversation a visitor's message (``kioskd ctl feedback|say|context|activity``,
        a feedback button); None, or why it cannot be sent now."""
        session = self._session
        if session is None:
            return "no conversation is open"
        if kind not in VISITOR_MESSAGES:
            return f"unknown visitor message {kind[:20]!r}"
        try:
            session.visitor_message(kind, text)  # type: ignore[arg-type]  # checked just above
        except NotNow as exc:
            return str(exc)
        return None

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
                if cmd in (Command.START, Command.TOGGLE) and self.closed is not None:
                    log.info("start ignored: the kiosk is closed (%s)", self.closed)
                elif cmd in (Command.START, Command.TOGGLE):
                    await self._conversation()
                elif cmd in (Command.MIC_ON, Command.MIC_OFF):
                    log.debug("ignored while idle command=%s", cmd)

    # ------------------------------------------------------------------ idle

    def _idle_state(self) -> tuple[KioskState, str]:
        if self._backend_error is not None and self._urls.healthy:
            self._backend_error = None  # the backend gives URLs again (e.g. the token was fixed)
        if self._error is not None or self._backend_error is not None:
            return KioskState.ERROR, self._error or self._backend_error or ""
        if self.closed is not None:
            return KioskState.CLOSED, self.closed
        if not self._urls.healthy and self._urls.last_error_kind in REJECTED_KINDS:
            return KioskState.ERROR, f"backend refuses this kiosk: {self._urls.last_error}"
        if not self._urls.healthy:
            return KioskState.OFFLINE, f"backend unreachable: {self._urls.last_error}"
        if self._start_failure is not None:
            return KioskState.IDLE, f"last start failed: {self._start_failure}"
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
        self._start_failure = None
        self._opened_any = False
        self.counters["conversations"] += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._commands_during_conversation, nursery.cancel_scope)
                if self.notice is not None:
                    self._board.update(state=KioskState.CONNECTING, reason="privacy notice", conversation_id=None)
                    await self.notice()
                await self._hold_conversation()
                nursery.cancel_scope.cancel()
        finally:
            if not self._opened_any:
                reason = self._start_failure or self._error or self._board.status.reason or "abandoned"
                self.events.publish("start_failed", reason=reason)
                self._audio.play_cue("error")
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
                    self._start_failure = "abandoned by request"
                    scope.cancel()
            elif cmd is Command.MIC_ON:
                self._audio.mic_enabled = True
            elif cmd is Command.MIC_OFF:
                self._audio.mic_enabled = False

    def _backoff(self, base: float | None = None, cap: float | None = None) -> Backoff:
        net = self.config.network
        return Backoff(base or net.backoff_base, cap or net.backoff_cap, rng=self._rng)

    async def _hold_conversation(self) -> None:
        """Start the conversation, and resume it after link faults until it really ends.

        Start: one attempt at a time, waiting what each failure asks (Retry-After, backoff),
        for at most START_WINDOW. Resume (the link died after the conversation opened):
        attempts race (see RESUME_INTERVAL) until the grace window ends; the new
        conversation gets a ``contextual_update`` with the transcript so far.
        """
        grace = self.config.conversation.reconnect_grace
        uplink = self._audio.open_uplink()  # captures from the trigger on: nothing said is lost
        transcript: list[str] = []
        resuming = False
        refusal_retry = True  # one refused URL (close 1008, HTTP 403) is retried with a fresh one
        deadline = trio.current_time() + START_WINDOW
        self._board.update(state=KioskState.CONNECTING, reason="", conversation_id=None)
        try:
            while True:
                if resuming:
                    outcome = await self._resume_once(uplink, resume_context(transcript), deadline)
                else:
                    outcome = await self._start_once(uplink, deadline)
                if outcome is None:  # gave up: the reason is on the board already
                    self.counters["failed_resumes" if resuming else "failed_starts"] += 1
                    return
                self.last_outcome = outcome
                # the gist so far: earlier lines plus this connection's, newest kept
                transcript = (transcript + outcome.transcript)[-max(self.config.conversation.context_lines, 1):]
                if refusal_retry and outcome.rejected and not outcome.opened and trio.current_time() < deadline:
                    # e.g. a URL minted by an agent service that has restarted since: once more, fresh
                    refusal_retry = False
                    log.info("the agent refused the URL; trying once with a fresh one: %s", outcome.reason)
                    continue
                if outcome.opened:
                    self._error = self._backend_error = None
                elif outcome.rejected:
                    self._error = outcome.reason
                elif not resuming:
                    self._start_failure = outcome.reason  # else lost when the board returns to idle
                if outcome.opened:
                    log.info("conversation ended id=%s reason=%r", outcome.conversation_id, outcome.reason)
                    self.events.publish("conversation_ended", id=outcome.conversation_id, reason=outcome.reason)
                else:
                    log.warning("%s failed: %s", "resuming" if resuming else "start", outcome.reason)
                step, deadline = after_outcome(
                    outcome, resuming=resuming, grace=grace, now=trio.current_time(), deadline=deadline
                )
                if step is Next.END:
                    if outcome.opened:
                        self._audio.play_cue("end")
                    return
                if step is Next.GIVE_UP:
                    self.counters["failed_resumes"] += 1
                    return
                resuming = True
                if outcome.opened:
                    log.info("resuming conversation within %.0f s: %s", grace, outcome.reason)
                self._board.update(
                    state=KioskState.RECONNECTING, reason=f"reconnecting: {outcome.reason}", conversation_id=None
                )
                uplink.close()
                uplink = self._audio.open_uplink()  # audio from the outage is not replayed
        finally:
            uplink.close()

    async def _start_once(self, uplink: MicPort, deadline: float) -> SessionOutcome | None:
        """A visitor's start: URL (with the backend's waits), then one connection; None: gave up."""
        backoff = self._backoff()
        while True:
            try:
                url = await self._urls.take()
            except SignedUrlError as exc:
                self._url_failed(exc)
                wait = exc.wait(backoff)
                if exc.kind in REJECTED_KINDS or trio.current_time() + wait > deadline:
                    log.warning("start failed: no conversation URL: %s", exc)
                    self._start_failure = str(exc)
                    return None
                log.warning("no conversation URL, retrying in %.1f s: %s", wait, exc)
                self._board.update(reason=f"retrying in {wait:.1f} s: {exc}")
                await trio.sleep(wait)
                continue
            outcome = await self._run_session(uplink, url, None)
            if outcome.opened or not outcome.resumable:
                return outcome
            # the connection failed before the conversation opened: try again while there is time
            wait = backoff.next_delay()
            if trio.current_time() + wait > deadline:
                return outcome
            self.last_outcome = outcome
            log.warning("connection failed, retrying in %.1f s: %s", wait, outcome.reason)
            self._board.update(reason=f"retrying in {wait:.1f} s: {outcome.reason}")
            await trio.sleep(wait)

    def _url_failed(self, exc: SignedUrlError) -> None:
        if exc.kind in REJECTED_KINDS:
            self._backend_error = f"backend refuses this kiosk: {exc}"
        self._board.update(reason=str(exc))

    async def _run_session(
        self, uplink: MicPort, url: str, context: str | None, *,
        connect_timeout: float | None = None, claim: Callable[[], bool] | None = None,
        on_claimed: Callable[[Session], None] | None = None,
    ) -> SessionOutcome:
        def count_resumed(event: ServerEvent | UnknownEvent) -> None:
            if isinstance(event, ConversationInitiationMetadata):
                if context is not None:
                    self.counters["resumed"] += 1
                elif not self._opened_any:
                    self._audio.play_cue("listening")
                self._opened_any = True
                cid = event.conversation_initiation_metadata_event.conversation_id or "unknown"
                self.events.publish("conversation_started", id=cid, resumed=context is not None)
            elif isinstance(event, UserTranscript):
                self.events.publish("visitor_said", id=session.conversation_id,
                                    text=event.user_transcription_event.user_transcript)
            elif isinstance(event, AgentResponse):
                self.events.publish("agent_said", id=session.conversation_id,
                                    text=event.agent_response_event.agent_response)

        session = Session(
            self.config, self._audio, uplink, self._tools, self._board, context=context,
            observers=[count_resumed, *self.observers],
        )

        def claimed() -> bool:
            if claim is not None and not claim():
                return False
            self._session = session
            return True

        if claim is None:
            self._session = session
        try:
            return await session.run(url, connect_timeout=connect_timeout, claim=claimed)
        finally:
            if self._session is session:
                self._session = None

    async def _resume_once(self, uplink: MicPort, context: str, deadline: float) -> SessionOutcome | None:
        """Race URL fetches, then connections, until one opens or the grace window ends."""
        backoff = self._backoff(RESUME_BACKOFF_BASE, RESUME_BACKOFF_CAP)  # shared: it paces both races
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._repeat_cue)
            try:
                url_race = Race[str](interval=RESUME_INTERVAL, slots=RESUME_ATTEMPTS, backoff=backoff)
                url = await url_race.run(self._resume_fetch, deadline)
                if url is None:
                    self._board.update(reason=f"gave up reconnecting: {url_race.last_reason}")
                    return None

                async def attempt(race: Race[SessionOutcome]) -> None:
                    outcome = await self._run_session(
                        uplink, url, context, connect_timeout=RESUME_ATTEMPT_TIMEOUT, claim=race.claim
                    )
                    if race.won_by_current():
                        race.value = outcome
                    else:
                        race.failed(outcome.reason, stop=not outcome.resumable)

                outcome_race = Race[SessionOutcome](interval=RESUME_INTERVAL, slots=RESUME_ATTEMPTS, backoff=backoff)
                outcome = await outcome_race.run(attempt, deadline)
                if outcome is None:
                    self._board.update(reason=f"gave up reconnecting: {outcome_race.last_reason}")
                return outcome
            finally:
                nursery.cancel_scope.cancel()

    async def _resume_fetch(self, race: Race[str]) -> None:
        try:
            url = await self._urls.take(timeout=RESUME_ATTEMPT_TIMEOUT)
        except SignedUrlError as exc:
            self._url_failed(exc)
            race.failed(str(exc), wait=exc.retry_after, stop=exc.kind in REJECTED_KINDS)
            return
        if race.claim():
            race.value = url

    async def _repeat_cue(self) -> None:
        while True:
            self._audio.play_cue("reconnecting")
            await trio.sleep(CUE_REPEAT)

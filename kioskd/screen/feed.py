"""Feeds the screen from the running kiosk: its status board and the agent's events.

:class:`ScreenFeed` is a status-board listener and a supervisor observer (the same hook the
demo's printer uses), both called on the Trio thread; it turns what they say into
:class:`~kioskd.screen.captions.ScreenModel` updates and wakes the page's event streams.
:func:`kiosk_actions` maps the page's buttons onto the same calls ``kioskd ctl`` uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from kioskd.hardware.leds import light_state
from kioskd.protocol.server_events import (
    AgentResponse,
    AgentResponseCorrection,
    AudioEvent,
    Interruption,
    ServerEvent,
    TentativeUserTranscript,
    UnknownEvent,
    UserTranscript,
)
from kioskd.screen.captions import ScreenModel
from kioskd.screen.server import ScreenActions, ScreenServer
from kioskd.state import Command, KioskState, Status

if TYPE_CHECKING:
    from kioskd.service.daemon import Kiosk

__all__ = ["ScreenFeed", "kiosk_actions"]


class ScreenFeed:
    """Board listener (:meth:`on_status`) and supervisor observer (:meth:`on_event`)."""

    def __init__(self, model: ScreenModel, server: ScreenServer, clock: Callable[[], float] = time.time) -> None:
        self.model = model
        self.server = server
        self.clock = clock

    def on_status(self, status: Status) -> None:
        """The kiosk's state, its light and whether the microphone is live."""
        self._changed(
            self.model.on_status(
                state=str(status.state),
                light=str(light_state(status)),
                reason=status.reason,
                mic_live=status.mic_live,
                agent_speaking=status.agent_speaking,
                conversation_id=status.conversation_id,
                now=self.clock(),
            )
        )

    def on_event(self, event: ServerEvent | UnknownEvent) -> None:
        """One event from the agent: words, alignment, interruptions."""
        model = self.model
        match event:
            case TentativeUserTranscript(tentative_user_transcription_event=body):
                changed = model.on_visitor(body.user_transcript, final=False)
            case UserTranscript(user_transcription_event=body):
                changed = model.on_visitor(body.user_transcript, final=True)
            case AgentResponse(agent_response_event=body):
                changed = model.on_agent(body.agent_response, event_id=body.event_id)
            case AgentResponseCorrection(agent_response_correction_event=body):
                changed = model.on_correction(body.original_agent_response, body.corrected_agent_response)
            case AudioEvent(audio_event=body) if body.alignment is not None:
                a = body.alignment
                changed = model.on_alignment(body.event_id, a.chars, a.char_start_times_ms, a.char_durations_ms)
            case Interruption():
                changed = model.on_interruption(self.clock())
            case _:
                changed = False
        self._changed(changed)

    def _changed(self, changed: bool) -> None:
        if changed:
            self.server.changed()


def kiosk_actions(kiosk: Kiosk) -> ScreenActions:
    """The page's buttons: the same as ``kioskd ctl start|end|say|feedback`` (and the GPIO button)."""

    async def talk() -> str | None:
        reply = await kiosk.start_and_wait()
        return None if reply.get("ok") else str(reply.get("error", "the conversation did not start"))

    async def end() -> str | None:
        kiosk.supervisor.command(Command.END)
        return None

    async def say(text: str) -> str | None:
        # a visitor who cannot speak starts the conversation by typing
        if kiosk.board.status.state is not KioskState.CONVERSATION:
            error = await talk()
            if error is not None:
                return error
        return kiosk.supervisor.visitor_message("say", text)

    async def feedback(rating: str) -> str | None:
        return kiosk.supervisor.visitor_message("feedback", rating)

    return ScreenActions(talk=talk, end=end, say=say, feedback=feedback)

"""The kiosk's state as everyone else sees it: ``kioskd ctl status``, the LEDs, systemd STATUS=.

The supervisor is the only writer; readers either look at :attr:`StatusBoard.status`
or register a listener that is called (on the Trio thread) after every change.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Command", "KioskState", "Status", "StatusBoard"]


class KioskState(enum.StrEnum):
    """What the kiosk is doing, as reported by ``kioskd ctl status``."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONVERSATION = "conversation"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"
    ERROR = "error"
    CLOSED = "closed"  # out of service (``kioskd ctl close`` or outside opening hours): triggers ignored


class Command(enum.StrEnum):
    """What a trigger asks of the supervisor."""

    START = "start"  # start a conversation (no-op if one is running)
    END = "end"  # end the running conversation (no-op if idle)
    TOGGLE = "toggle"  # start if idle, end if in a conversation
    MIC_ON = "mic_on"  # push-to-talk pressed: microphone live
    MIC_OFF = "mic_off"  # push-to-talk released: send silence


@dataclass(frozen=True)
class Status:
    """One consistent snapshot of the kiosk's state."""

    state: KioskState = KioskState.IDLE
    reason: str = ""
    conversation_id: str | None = None
    agent_speaking: bool = False
    mic_live: bool = False
    vad_score: float = 0.0
    problems: tuple[str, ...] = ()
    """Everything broken, as plain sentences (microphone missing, backend rejecting the token, …)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out = {
            "state": str(self.state),
            "reason": self.reason,
            "conversation_id": self.conversation_id,
            "agent_speaking": self.agent_speaking,
            "mic_live": self.mic_live,
            "problems": list(self.problems),
        }
        out.update(self.extra)
        return out


Listener = Callable[[Status], None]


class StatusBoard:
    """Holds the current :class:`Status` and tells listeners about every change."""

    def __init__(self) -> None:
        self.status = Status()
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(status)`` after every change; returns a function that unregisters it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def update(self, **changes: Any) -> None:
        """Change some fields; listeners are called only if something really changed."""
        status = self.status
        if all(getattr(status, key) == value for key, value in changes.items()):
            return  # the common case (e.g. mic_live before every chunk): no new Status built
        new = dataclasses.replace(status, **changes)
        if new == self.status:
            return
        self.status = new
        for listener in list(self._listeners):
            listener(new)

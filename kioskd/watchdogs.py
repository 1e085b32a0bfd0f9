"""A conversation's clocks as values: the stall, idle and maximum-length watchdogs and a pending end.

Pure: times go in as floats (``heard``, ``active``, ``audio``), :attr:`Watchdogs.deadline`
says when the next one is due, and :meth:`Watchdogs.due` the :class:`~kioskd.actions.End`
that is due at a time, if any. :class:`~kioskd.conversation.Conversation` owns one and
decides what to do with what it answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from kioskd.actions import End, SessionOutcome
from kioskd.config import ConversationConfig

__all__ = ["STALLED_CLOSE_CODE", "STALLED_CLOSE_TIMEOUT", "Drain", "Watchdogs"]

#: A stalled link gets no close handshake: nothing would come back, and recovery must not wait.
STALLED_CLOSE_TIMEOUT = 0.0
#: The close code we send when we give up on a stalled link.
STALLED_CLOSE_CODE = 1001


@dataclass(frozen=True)
class Drain:
    """A pending end: once nothing plays and no audio came for ``quiet`` since ``since`` (at most until ``until``)."""

    outcome: SessionOutcome
    since: float
    until: float
    quiet: float = 0.0


class Watchdogs:
    """When the link was last heard, the conversation last active, agent audio last arrived; its pending end."""

    def __init__(self, limits: ConversationConfig, stall: float) -> None:
        self._limits = limits
        self.stall = stall
        self.opened_at = self.last_heard = self.last_activity = 0.0
        #: when agent audio last arrived
        self.last_audio = 0.0
        #: the agent closed the link: nothing more can be heard, so it cannot stall
        self.link_closed = False
        self.drain: Drain | None = None

    def start(self, now: float) -> None:
        """The link is up: every watchdog counts from ``now``."""
        self.opened_at = self.last_heard = self.last_activity = now

    def heard(self, now: float) -> None:
        """Something arrived on the link."""
        self.last_heard = max(self.last_heard, now)

    def active(self, now: float) -> None:
        """The visitor or the agent is talking at ``now``."""
        self.last_activity = now

    def active_since(self, when: float) -> None:
        """The visitor was heard at ``when`` (the kiosk's own VAD): activity no older than that."""
        self.last_activity = max(self.last_activity, when)

    def audio(self, now: float) -> None:
        """Agent audio arrived at ``now``."""
        self.last_activity = self.last_audio = now

    @property
    def deadline(self) -> float:
        """The next time :meth:`due` may answer something (a watchdog or the pending end)."""
        times = [self.last_activity + self._limits.idle_timeout, self.opened_at + self._limits.max_duration]
        if not self.link_closed:
            times.append(self.last_heard + self.stall)
        if self.drain is not None:
            times.append(max(self.drain.since, self.last_audio) + self.drain.quiet)
        return min(times)

    def stalled(self, now: float) -> bool:
        """Nothing has been heard on the open link for the stall timeout."""
        return not self.link_closed and now >= self.last_heard + self.stall

    def due(self, now: float, speaking: bool) -> End | None:
        """The end that is due at ``now`` (``speaking``: agent audio is audible), if any: stall first."""
        if self.stalled(now):
            return End(
                SessionOutcome(f"link stalled: nothing heard for {self.stall:g} s", resumable=True),
                STALLED_CLOSE_CODE,
                STALLED_CLOSE_TIMEOUT,
            )
        if now >= self.last_activity + self._limits.idle_timeout:
            return End(SessionOutcome(f"no speech from visitor or agent for {self._limits.idle_timeout:g} s"))
        if now >= self.opened_at + self._limits.max_duration:
            return End(SessionOutcome(f"maximum length of {self._limits.max_duration:g} s reached"))
        drain = self.drain
        if drain is not None and (
            now >= drain.until or (not speaking and now >= max(drain.since, self.last_audio) + drain.quiet)
        ):
            return End(drain.outcome)
        return None

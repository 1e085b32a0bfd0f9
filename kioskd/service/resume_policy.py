"""What the supervisor does after a session ended, and what the agent is told on resuming (pure).

:func:`after_outcome` decides from the outcome and the time: end, give up, or resume
within the grace window (only a link fault of a conversation that had opened is resumed);
:func:`resume_context` is the ``contextual_update`` the new conversation starts with.
"""

from __future__ import annotations

import enum

from kioskd.actions import SessionOutcome

__all__ = ["Next", "after_outcome", "resume_context"]


def resume_context(transcript: list[str]) -> str:
    """The ``contextual_update`` that lets the agent pick up a conversation after a dropped link."""
    if not transcript:
        return "The connection dropped and was restored; the visitor is still here. Continue the conversation."
    lines = "\n".join(transcript)
    return (
        "The connection dropped and was restored; the visitor is still here. "
        "Continue the conversation without starting over. The conversation so far:\n" + lines
    )


class Next(enum.Enum):
    """What the supervisor does after a session ended."""

    END = "end"  # the conversation is over: show why
    GIVE_UP = "give up"  # resuming failed for the whole grace window
    RESUME = "resume"  # open a new conversation that picks up where this one was


def after_outcome(
    outcome: SessionOutcome, *, resuming: bool, grace: float, now: float, deadline: float
) -> tuple[Next, float]:
    """What to do after ``outcome``, and until when resuming may go on (pure).

    Only a link fault is resumed, and only once the conversation had opened (a start that
    fails is retried by the start loop instead): within ``grace`` of the latest drop.
    ``resuming``: this outcome is of a resume attempt; ``deadline``: the current window's end.
    """
    if not outcome.resumable or grace <= 0 or not (outcome.opened or resuming):
        return Next.END, deadline
    if outcome.opened:  # the grace window counts from the latest drop
        return Next.RESUME, now + grace
    if now >= deadline:
        return Next.GIVE_UP, deadline
    return Next.RESUME, deadline

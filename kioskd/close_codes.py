"""What each WebSocket close code of the agent means, and whether the conversation may resume.

Pure: a number in, a sentence and a yes/no out (:func:`closed_outcome`: the outcome of such
a close). Only link and server faults are resumable; an end the agent chose (1000, 1002,
1008, the 4000 range, anything unknown) is not, so a kiosk never loops reopening a
conversation closed on purpose.
"""

from __future__ import annotations

from kioskd.actions import SessionOutcome

__all__ = ["APPLICATION_CODES", "CLOSE_CODES", "DROPPED", "REJECTED", "closed_outcome", "describe_close"]

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
#: The code a connection that ended without a close frame counts as.
DROPPED = 1006
#: Application close codes (4000-4999) carry no meaning we know: the agent ended it on purpose.
APPLICATION_CODES = range(4000, 5000)
#: The close code of a conversation the agent rejected (its outcome is marked ``rejected``).
REJECTED = 1008


def describe_close(code: int | None) -> tuple[str, bool]:
    """``(meaning, resumable)`` for a WebSocket close code (None: dropped without a close frame)."""
    if code is None:
        return CLOSE_CODES[DROPPED]
    if code in APPLICATION_CODES:
        return f"the agent closed it with application code {code}", False
    return CLOSE_CODES.get(code, (f"closed with code {code}", False))


def closed_outcome(code: int | None) -> SessionOutcome:
    """The outcome of a close with ``code`` (None: dropped without a close frame)."""
    meaning, resumable = describe_close(code)
    return SessionOutcome(meaning, resumable=resumable, rejected=code == REJECTED, close_code=code)

"""Signed-URL tokens: minted by the simulated backend, checked when a conversation starts."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

__all__ = ["TokenStore"]


@dataclass
class TokenStore:
    """Tokens valid ``ttl`` seconds (on the clock passed in) to *start* a conversation; reuse allowed."""

    ttl: float
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)

    def mint(self, agent_id: str, now: float) -> str:
        """A fresh token for ``agent_id``."""
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (agent_id, now + self.ttl)
        return token

    def check(self, token: str, agent_id: str, now: float) -> str | None:
        """None if ``token`` may start a conversation with ``agent_id`` now, else why not."""
        entry = self._tokens.get(token)
        if entry is None:
            return "unknown token"
        if entry[0] != agent_id:
            return "token is for another agent"
        if now > entry[1]:
            return "token expired"
        return None

    def forget(self) -> None:
        """Forget every token minted so far, as a restarted service would (they now get 1008)."""
        self._tokens.clear()

    def issued(self) -> list[str]:
        """Every token minted so far (for tests that check no token leaks into logs)."""
        return list(self._tokens)

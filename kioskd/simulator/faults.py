"""Fault switches of the simulated agent and backend, settable at run time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

__all__ = ["BACKEND_FAULT_MODES", "MALFORMED_KINDS", "AgentFaults", "BackendFaults", "MalformedKind"]

MalformedKind = Literal["json", "type", "base64", "unknown", "mixed"]
MALFORMED_KINDS: Final[tuple[str, ...]] = ("json", "type", "base64", "unknown")
BACKEND_FAULT_MODES: Final[tuple[str, ...]] = ("401", "429", "500", "503", "timeout", "garbage", "bad_json")


class _Target(Protocol):
    """A live conversation that faults act on."""

    def fault_drop(self) -> None: ...
    def fault_close(self, code: int, reason: str) -> None: ...
    def fault_malformed(self, count: int, kind: MalformedKind) -> None: ...
    def fault_raw(self, text: str) -> None: ...


@dataclass
class AgentFaults:
    """Switches on the agent's WebSocket side.

    ``stall``: keep every TCP connection open but send nothing and ignore input.
    ``delay``: seconds added before each outgoing message. The methods act at once on
    every open conversation and return how many they touched.
    """

    stall: bool = False
    delay: float = 0.0
    _targets: set[_Target] = field(default_factory=set, repr=False)

    def drop(self) -> int:
        """Abort every open conversation's TCP connection abruptly (RST, no close frame)."""
        targets = list(self._targets)
        for target in targets:
            target.fault_drop()
        return len(targets)

    def close(self, code: int = 1011, reason: str = "simulated internal error") -> int:
        """Close every open conversation with ``code``."""
        targets = list(self._targets)
        for target in targets:
            target.fault_close(code, reason)
        return len(targets)

    def malformed(self, count: int = 1, kind: MalformedKind = "mixed") -> int:
        """Send ``count`` malformed events (bad JSON, wrong types, bad base64, unknown type)."""
        targets = list(self._targets)
        for target in targets:
            target.fault_malformed(count, kind)
        return len(targets)

    def send_raw(self, text: str) -> int:
        """Send ``text`` as it is to every open conversation (an event of an odd but legal shape, say)."""
        targets = list(self._targets)
        for target in targets:
            target.fault_raw(text)
        return len(targets)

    def reset(self) -> None:
        """Switch every standing fault off."""
        self.stall = False
        self.delay = 0.0


@dataclass
class BackendFaults:
    """Switches on one HTTP endpoint.

    ``mode``: None (behave), "401", "429", "500", "503", "timeout" (hang), "garbage"
    (200 with a non-JSON body), "bad_json" (200 JSON without ``signed_url``).
    ``times``: how many requests the mode applies to before it clears itself (None: until reset).
    """

    mode: str | None = None
    retry_after: int = 5
    delay: float = 0.0
    times: int | None = None

    def set(self, mode: str | None, *, times: int | None = None, retry_after: int | None = None) -> None:
        """Switch to ``mode`` (checked against the known modes)."""
        if mode is not None and mode not in BACKEND_FAULT_MODES:
            raise ValueError(f"unknown backend fault {mode!r} (expected one of {', '.join(BACKEND_FAULT_MODES)})")
        self.mode = mode
        self.times = times
        if retry_after is not None:
            self.retry_after = retry_after

    def take(self) -> str | None:
        """The mode for the request at hand (counts down ``times``)."""
        mode = self.mode
        if mode is not None and self.times is not None:
            self.times -= 1
            if self.times <= 0:
                self.mode, self.times = None, None
        return mode

    def reset(self) -> None:
        """Behave again."""
        self.mode, self.times, self.delay = None, None, 0.0

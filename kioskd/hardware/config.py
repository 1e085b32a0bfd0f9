"""The hardware edge's config sections: ``[button]`` and ``[leds]`` (BCM pin numbering).

Part of ``config.toml`` (:class:`kioskd.config.Config` holds them); validated the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BCM_PINS", "ButtonConfig", "ButtonMode", "LedConfig", "LedKind"]

#: The header's GPIO pins in BCM numbering (the 40-pin header of every Raspberry Pi since the B+).
BCM_PINS = range(0, 28)


ButtonMode = Literal["toggle", "hold"]


@dataclass(frozen=True)
class ButtonConfig:
    """The GPIO button (BCM pin numbering)."""

    pin: int = 17
    pull_up: bool = True
    mode: ButtonMode = "toggle"
    long_press: float = 3.0
    bounce_ms: int = 50
    #: Optional feedback buttons (BCM pins; -1 = none): a press rates the agent's latest answer.
    like_pin: int = -1
    dislike_pin: int = -1

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.pin not in BCM_PINS:
            out.append(("pin", f"must be a GPIO of the header, BCM {BCM_PINS[0]}–{BCM_PINS[-1]}"))
        for key in ("like_pin", "dislike_pin"):
            if getattr(self, key) != -1 and getattr(self, key) not in BCM_PINS:
                out.append((key, f"must be a GPIO of the header, BCM {BCM_PINS[0]}–{BCM_PINS[-1]}, or -1 for none"))
        if self.long_press <= 0:
            out.append(("long_press", "must be positive"))
        if not 0 <= self.bounce_ms <= 1000:
            out.append(("bounce_ms", "must be between 0 and 1000"))
        return out


LedKind = Literal["none", "pwm", "rgb"]


@dataclass(frozen=True)
class LedConfig:
    """Status light: one PWM LED (``pin``) or an RGB LED (``red``/``green``/``blue``)."""

    kind: LedKind = "none"
    pin: int = 18
    red: int = 5
    green: int = 6
    blue: int = 13
    active_high: bool = True
    brightness: float = 1.0

    def problems(self) -> list[tuple[str, str]]:
        out = []
        pins = {"pwm": ("pin",), "rgb": ("red", "green", "blue")}.get(self.kind, ())
        for key in pins:
            if getattr(self, key) not in BCM_PINS:
                out.append((key, f"must be a GPIO of the header, BCM {BCM_PINS[0]}–{BCM_PINS[-1]}"))
        if self.kind == "rgb" and len({self.red, self.green, self.blue}) != 3:
            out.append(("red", "red, green and blue must be three different pins"))
        if not 0.0 < self.brightness <= 1.0:
            out.append(("brightness", "must be in (0, 1]"))
        return out

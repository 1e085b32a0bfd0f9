"""The operator's config sections: ``[cues]``, ``[privacy]``, ``[hours]``, ``[hooks]``, ``[state]``.

Part of ``config.toml`` (:class:`kioskd.config.Config` holds them); validated the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "CUE_NAMES",
    "WEEKDAYS",
    "CuesConfig",
    "HooksConfig",
    "HoursConfig",
    "PrivacyConfig",
    "StateConfig",
    "parse_hours",
]

#: Cue names (see kioskd.audio.cues) and what ``[cues]`` values mean.
CUE_NAMES = ("listening", "end", "error", "reconnecting")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _sound_problem(value: str) -> str | None:
    """``"default"``, ``""`` (off) or ``"wav:PATH"``/a path: a message when the value cannot be one."""
    if value in ("", "default") or value.removeprefix("wav:").strip():
        return None
    return "must be 'default', '' (off) or the path of a WAV file"


@dataclass(frozen=True)
class CuesConfig:
    """Short sounds the kiosk plays by itself: ``"default"`` (shipped), ``""`` (off) or a WAV file's path."""

    listening: str = "default"
    end: str = "default"
    error: str = "default"
    reconnecting: str = "default"
    volume: float = 0.5

    def problems(self) -> list[tuple[str, str]]:
        out = [(name, msg) for name in CUE_NAMES if (msg := _sound_problem(getattr(self, name)))]
        if not 0.0 <= self.volume <= 1.0:
            out.append(("volume", "must be between 0.0 and 1.0"))
        return out


@dataclass(frozen=True)
class PrivacyConfig:
    """What the kiosk tells a visitor before the first turn (why the microphone listens)."""

    notice: str = ""
    notice_text: str = ""

    def problems(self) -> list[tuple[str, str]]:
        msg = _sound_problem(self.notice) if self.notice != "default" else "has no shipped default; give a WAV file"
        return [("notice", msg)] if msg else []


def parse_hours(spec: str) -> list[tuple[int, int]]:
    """``"09:00-12:30, 13:30-17:00"`` → minute ranges ``[(540, 750), (810, 1020)]``; ValueError naming the part."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            start, end = (_minutes(t) for t in part.split("-"))
        except ValueError:
            raise ValueError(f"{part!r} is not HH:MM-HH:MM") from None
        if start == end:
            raise ValueError(f"{part!r} is empty")
        out.append((start, end))
    return out


def _minutes(text: str) -> int:
    hours, minutes = text.strip().split(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= m < 60 and h * 60 + m <= 1440):
        raise ValueError(text)
    return h * 60 + m


@dataclass(frozen=True)
class HoursConfig:
    """Opening hours: outside them the kiosk is closed (triggers ignored, the light says closed).

    ``daily`` applies to every day without its own key; ``""`` means always open. A range
    may pass midnight (``"22:00-02:00"``). Times are the kiosk's local time.
    """

    daily: str = ""
    mon: str | None = None
    tue: str | None = None
    wed: str | None = None
    thu: str | None = None
    fri: str | None = None
    sat: str | None = None
    sun: str | None = None

    def problems(self) -> list[tuple[str, str]]:
        out = []
        for key in ("daily", *WEEKDAYS):
            value = getattr(self, key)
            if value is None:
                continue
            try:
                parse_hours(value)
            except ValueError as exc:
                out.append((key, f"{exc}; expected e.g. \"09:00-17:00\" or \"09:00-12:00, 13:00-17:00\""))
        return out


@dataclass(frozen=True)
class HooksConfig:
    """Commands run on events (the event as one JSON line on stdin), each killed after ``timeout`` s."""

    timeout: float = 10.0
    on: dict[str, list[str]] = field(default_factory=dict)

    def problems(self) -> list[tuple[str, str]]:
        from kioskd.events import EVENT_TYPES  # late import: events imports nothing from here

        out = []
        if not 0 < self.timeout <= 300:
            out.append(("timeout", "must be in (0, 300] seconds"))
        for name, argv in self.on.items():
            if name != "any" and name not in EVENT_TYPES:
                out.append((f"on.{name}", f"unknown event; known: any, {', '.join(EVENT_TYPES)}"))
            elif not argv or not argv[0].startswith("/"):
                out.append((f"on.{name}", "must be a command as a list, starting with an absolute path"))
        return out


@dataclass(frozen=True)
class StateConfig:
    """Where live settings (volume, mute, closed) are kept across restarts."""

    file: str = "/var/lib/kioskd/state.json"

    def problems(self) -> list[tuple[str, str]]:
        return [] if self.file.strip() else [("file", "must be a path")]

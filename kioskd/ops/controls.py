"""Live controls: volume, mute, out of service, opening hours; kept across restarts.

:class:`LiveControls` is the one place these settings change. Each change is applied at
once (to the audio engine and the supervisor), written to ``[state] file`` (JSON,
replaced atomically) and published as a ``controls`` event. :func:`is_open` decides the
opening hours (pure).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from kioskd.events import EventBus
from kioskd.ops.config import WEEKDAYS, HoursConfig, parse_hours

__all__ = ["LiveControls", "Settings", "is_open"]

log = logging.getLogger(__name__)

#: How often the opening hours are looked at (a closing time is kept to within this).
HOURS_CHECK = 30.0
#: The reason shown while closed by the operator, and outside opening hours.
CLOSED_BY_OPERATOR = "closed by the operator (kioskd ctl open reopens it)"
CLOSED_BY_HOURS = "outside opening hours"


def is_open(hours: HoursConfig, now: dt.datetime) -> bool:
    """True if ``now`` (local time) falls in the day's opening hours ("" = always open)."""
    def ranges(day: int) -> list[tuple[int, int]]:
        own = getattr(hours, WEEKDAYS[day])
        return parse_hours(hours.daily if own is None else own)

    today, yesterday = now.weekday(), (now.weekday() - 1) % 7
    if not any(getattr(hours, d) is not None for d in WEEKDAYS) and not hours.daily.strip():
        return True
    minute = now.hour * 60 + now.minute
    for start, end in ranges(today):
        if (start < end and start <= minute < end) or (start > end and minute >= start):
            return True
    # a range of yesterday's that passes midnight
    return any(start > end and minute < end for start, end in ranges(yesterday))


@dataclass
class Settings:
    """What the state file holds."""

    volume: float
    muted: bool = False
    closed: bool = False


class LiveControls:
    """Volume, mute and closing, applied through ``apply(settings, closed_reason)`` and kept in ``path``."""

    def __init__(
        self,
        path: str,
        default_volume: float,
        hours: HoursConfig,
        events: EventBus,
        apply: Callable[[Settings, str | None], None],
        *,
        now: Callable[[], dt.datetime] = dt.datetime.now,
    ) -> None:
        self.path = Path(path)
        self.hours = hours
        self._events = events
        self._apply = apply
        self._now = now
        self.settings = self._load(default_volume)
        self.closed_reason: str | None = None

    def _load(self, default_volume: float) -> Settings:
        try:
            data = json.loads(self.path.read_text())
            settings = Settings(
                volume=min(1.0, max(0.0, float(data.get("volume", default_volume)))),
                muted=bool(data.get("muted", False)),
                closed=bool(data.get("closed", False)),
            )
        except FileNotFoundError:
            return Settings(default_volume)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("state file unusable, starting from the config's settings path=%s error=%s", self.path, exc)
            return Settings(default_volume)
        log.info("live settings restored path=%s volume=%.2f muted=%s closed=%s",
                 self.path, settings.volume, settings.muted, settings.closed)
        return settings

    def _save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(self.settings), f)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot keep live settings across restarts path=%s error=%s", self.path, exc)

    def snapshot(self) -> dict[str, Any]:
        """The live settings for ``ctl status`` and the ``controls`` event."""
        return {**asdict(self.settings), "closed_reason": self.closed_reason}

    def refresh(self) -> None:
        """Apply the settings and the opening hours now (at start, after every change, and on a timer)."""
        if self.settings.closed:
            reason: str | None = CLOSED_BY_OPERATOR
        elif not is_open(self.hours, self._now()):
            reason = CLOSED_BY_HOURS
        else:
            reason = None
        changed = reason != self.closed_reason
        self.closed_reason = reason
        self._apply(self.settings, reason)
        if changed:
            log.info("kiosk %s", f"closed: {reason}" if reason else "open")

    def change(self, **values: Any) -> dict[str, Any]:
        """Set ``volume``, ``muted`` and/or ``closed``; apply, keep and publish. Returns the snapshot."""
        for key, value in values.items():
            setattr(self.settings, key, value)
        self.refresh()
        self._save()
        snap = self.snapshot()
        self._events.publish("controls", **snap)
        return snap

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply now, then follow the opening hours until cancelled."""
        self.refresh()
        task_status.started()
        while True:
            await trio.sleep(HOURS_CHECK)
            self.refresh()

"""Everything broken on a kiosk, as plain sentences an operator can act on.

:func:`readiness_problems` reads the config alone (placeholders, unreadable WAV files) and
is shared by ``kioskd check-config`` and the daemon. :func:`live_problems` looks at the
running parts (audio devices, button, light, backend). :class:`ProblemWatch` keeps
``Status.problems`` current, logs each problem when it appears and when it clears, and
publishes ``problem_appeared`` / ``problem_cleared`` events.
"""

from __future__ import annotations

import logging
import wave
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import trio

from kioskd.config import Config
from kioskd.events import EventBus
from kioskd.state import StatusBoard

__all__ = ["PLACEHOLDER_AGENT", "ProblemWatch", "live_problems", "readiness_problems", "wav_problem"]

log = logging.getLogger(__name__)

#: The shipped config's agent id: a kiosk still carrying it has not been set up.
PLACEHOLDER_AGENT = "agent_replace_me"
#: Hosts reserved for examples (RFC 2606): a backend URL on one of them is a placeholder.
EXAMPLE_DOMAINS = ("example.org", "example.com", "example.net")
#: How often the running parts are looked at.
CHECK_INTERVAL = 1.0


def wav_problem(path: str, direction: str) -> str | None:
    """Why the ``wav:`` input at ``path`` cannot be used (None if it can); outputs need a writable folder."""
    if direction == "output":
        import os

        folder = os.path.dirname(os.path.abspath(path))
        return None if os.access(folder, os.W_OK) else f"cannot write {path}: {folder} is not writable"
    try:
        with wave.open(path, "rb") as w:
            if w.getsampwidth() != 2:
                return f"{path} is a {8 * w.getsampwidth()}-bit WAV file; 16-bit PCM is needed"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    except (wave.Error, EOFError) as exc:
        return f"{path} is not a WAV file ({exc})"
    return None


def _sound_file(value: str) -> str | None:
    return None if value in ("", "default") else value.removeprefix("wav:")


def readiness_problems(config: Config, *, devices: bool = True) -> list[str]:
    """Problems of a valid config that would still leave the kiosk useless, each naming its key.

    ``devices=False`` leaves out the ``wav:`` devices (the running daemon reports its devices live).
    """
    out = []
    if config.agent.agent_id.strip() == PLACEHOLDER_AGENT:
        out.append(f"agent.agent_id: still the placeholder {PLACEHOLDER_AGENT!r}; set your agent's id")
    if config.backend is not None:
        host = (urlsplit(config.backend.url).hostname or "").lower()
        if any(host == d or host.endswith("." + d) for d in EXAMPLE_DOMAINS):
            out.append(f"backend.url: {host} is the example placeholder; set your signing backend's URL")
    for key in ("input", "output") if devices else ():
        value = getattr(config.audio, key)
        if value.startswith("wav:") and (problem := wav_problem(value[4:], key)):
            out.append(f"audio.{key}: {problem}")
    sounds = [(f"cues.{name}", getattr(config.cues, name)) for name in ("listening", "end", "error", "reconnecting")]
    for key, value in [*sounds, ("privacy.notice", config.privacy.notice)]:
        path = _sound_file(value)
        if path and (problem := wav_problem(path, "input")):
            out.append(f"{key}: {problem}")
    return out


def live_problems(
    config: Config, audio: dict[str, Any], *, button: Any = None, leds: Any = None, urls: Any = None
) -> list[str]:
    """What is broken right now, from the engine's status and the parts' ``available`` flags."""
    out = []
    if not audio.get("input_ok"):
        out.append(f"the microphone is not working: {audio.get('input_error') or 'not opened yet'}")
    if not audio.get("output_ok"):
        out.append(f"the speaker is not working: {audio.get('output_error') or 'not opened yet'}")
    if button is not None and not button.available and button.unavailable_reason:
        others = "voice wake and `kioskd ctl start`" if config.trigger.mode == "both" else "only `kioskd ctl start`"
        out.append(f"the button (GPIO {config.button.pin}) is unavailable: {button.unavailable_reason}; "
                   f"{others} can start a conversation")
    if leds is not None and not leds.available and leds.unavailable_reason:
        out.append(f"the status light is unavailable: {leds.unavailable_reason}")
    if urls is not None and not urls.healthy:
        if urls.last_error_kind in ("unauthorized", "forbidden"):
            out.append(f"the backend refuses this kiosk: {urls.last_error}")
        elif urls.last_error_kind in ("network", "timeout"):
            out.append(f"the backend cannot be reached: {urls.last_error}")
        else:
            out.append(f"the backend gives no conversation URLs: {urls.last_error}")
    return out


class ProblemWatch:
    """Keeps ``board.status.problems`` equal to ``fixed + collect()``; logs and publishes every change."""

    def __init__(self, board: StatusBoard, events: EventBus, collect: Callable[[], list[str]],
                 fixed: list[str] | None = None) -> None:
        self._board = board
        self._events = events
        self._collect = collect
        self._fixed = list(fixed or [])

    def check(self) -> tuple[str, ...]:
        """Look once; returns the problems now."""
        now = tuple(dict.fromkeys(self._fixed + self._collect()))
        before = self._board.status.problems
        for problem in now:
            if problem not in before:
                log.warning("problem: %s", problem)
                self._events.publish("problem_appeared", problem=problem)
        for problem in before:
            if problem not in now:
                log.info("problem cleared: %s", problem)
                self._events.publish("problem_cleared", problem=problem)
        self._board.update(problems=now)
        return now

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check now and every CHECK_INTERVAL until cancelled."""
        self.check()
        task_status.started()
        while True:
            await trio.sleep(CHECK_INTERVAL)
            self.check()

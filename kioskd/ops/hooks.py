"""``[hooks]``: run the operator's commands on events, the event as one JSON line on stdin.

Each command runs in its own task with its own time limit (``hooks.timeout``: killed
after it), output discarded except for a short excerpt logged on failure. At most
:data:`MAX_RUNNING` of one hook run at once (a stuck hook cannot starve the others);
events arriving beyond that are skipped with a log line. The runner reads the event bus
through its own bounded subscription, so a slow hook can never hold up the kiosk.
"""

from __future__ import annotations

import json
import logging
import subprocess

import trio

from kioskd.config import HooksConfig
from kioskd.events import Event, EventBus

__all__ = ["HookRunner"]

log = logging.getLogger(__name__)

#: Processes of one hook (one ``hooks.on`` key) running at once, at most.
MAX_RUNNING = 2
#: Bytes of a failing hook's stderr kept for its log line.
STDERR_EXCERPT = 300


class HookRunner:
    """Runs ``config.on[event type]`` and ``config.on["any"]`` for every event."""

    def __init__(self, config: HooksConfig, events: EventBus) -> None:
        self.config = config
        self._events = events
        self._running: dict[str, int] = {}  # hook key → processes running
        self.skipped = 0
        self.finished: list[tuple[str, int | None]] = []  # (event type, exit code or None: timed out), for status/tests

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the event bus until cancelled (returns at once without hooks)."""
        if not self.config.on:
            task_status.started()
            return
        with self._events.subscribe() as events:
            task_status.started()
            async with trio.open_nursery() as nursery:
                async for event in events:
                    for key in (event["type"], "any"):
                        if key in self.config.on:
                            self._launch(nursery, key, event)

    def _launch(self, nursery: trio.Nursery, key: str, event: Event) -> None:
        argv = self.config.on[key]
        if self._running.get(key, 0) >= MAX_RUNNING:
            self.skipped += 1
            log.warning("hook skipped: %d still running hook=%s event=%s", MAX_RUNNING, key, event["type"])
            return
        self._running[key] = self._running.get(key, 0) + 1
        nursery.start_soon(self._one, key, argv, event)

    async def _one(self, key: str, argv: list[str], event: Event) -> None:
        data = (json.dumps(event) + "\n").encode()
        code: int | None = None
        try:
            with trio.move_on_after(self.config.timeout):
                result = await trio.run_process(
                    argv, stdin=data, stdout=subprocess.DEVNULL, capture_stderr=True, check=False,
                )
                code = result.returncode
                if code != 0:
                    excerpt = result.stderr[-STDERR_EXCERPT:].decode(errors="replace").strip()
                    log.warning(
                        "hook failed event=%s command=%s exit=%d stderr=%r", event["type"], argv[0], code, excerpt
                    )
            if code is None:
                log.warning("hook killed after %.0f s event=%s command=%s", self.config.timeout, event["type"], argv[0])
        except OSError as exc:
            code = -1
            log.warning("hook cannot run event=%s command=%s error=%s", event["type"], argv[0], exc.strerror or exc)
        finally:
            self._running[key] -= 1
            self.finished.append((event["type"], code))
            del self.finished[:-64]

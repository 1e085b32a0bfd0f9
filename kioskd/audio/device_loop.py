"""One audio device kept open: open it on its thread, wait for the failure, back off, reopen, forever.

:class:`DeviceLoop` runs one direction's device thread (made by the engine) and keeps what
the engine reports about it (``ok``, format, the last error, failures). Failures arrive as
values (:class:`~kioskd.audio.devices.DeviceFailed`); the loop never ends on one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

import trio

from kioskd.audio.devices import DeviceFailed, DeviceOpened, Direction
from kioskd.backoff import Backoff

__all__ = ["DEVICE_BACKOFF_BASE", "DEVICE_BACKOFF_CAP", "STABLE_SECONDS", "DeviceLoop", "DeviceThread"]

log = logging.getLogger(__name__)

DEVICE_BACKOFF_BASE = 0.5
"""First reopen waits up to this long (seconds)."""
DEVICE_BACKOFF_CAP = 10.0
"""Reopen waits never exceed this (seconds)."""
STABLE_SECONDS = 5.0
"""A device that ran this long before failing reopens with the shortest backoff."""


class DeviceThread(Protocol):
    """What the loop needs of a device thread (:class:`~kioskd.audio.device_threads.CaptureThread` and its twin)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def join(self, timeout: float = ...) -> bool: ...


class DeviceLoop:
    """One direction's device: its reopen loop and what is known about it (for status)."""

    def __init__(
        self,
        direction: Direction,
        name: str,
        make_thread: Callable[[Callable[[Any], object]], DeviceThread],
        *,
        backoff: tuple[float, float],
        on_opened: Callable[[DeviceOpened], None],
        on_failed: Callable[[DeviceFailed], None],
    ) -> None:
        self.direction: Direction = direction
        self.name = name
        self.ok = False
        self.rate = 0
        self.channels = 0
        self.error: str | None = None
        self.failures = 0
        self._make_thread = make_thread
        self._backoff = backoff
        self._on_opened = on_opened
        self._on_failed = on_failed

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Open, wait for failure, back off, reopen — forever; started after the first attempt."""
        backoff = Backoff(*self._backoff)
        started = False
        while True:
            send, recv = trio.open_memory_channel[DeviceOpened | DeviceFailed](math.inf)
            thread = self._make_thread(functools.partial(_send, send))
            opened_at: float | None = None
            try:
                thread.start()
                async for event in recv:
                    if isinstance(event, DeviceOpened):
                        opened_at = trio.current_time()
                        self._opened(event)
                    else:
                        self._failed(event)
                        break
                    if not started:
                        started = True
                        task_status.started()
            finally:
                thread.stop()
                with trio.CancelScope(shield=True):
                    if not await trio.to_thread.run_sync(thread.join):
                        log.error("audio thread did not stop direction=%s device=%s", self.direction, self.name)
            if not started:
                started = True
                task_status.started()
            if opened_at is not None and trio.current_time() - opened_at >= STABLE_SECONDS:
                backoff.reset()
            await trio.sleep(backoff.next_delay())

    def _opened(self, event: DeviceOpened) -> None:
        self._on_opened(event)  # before ``ok``: the engine's view of the device changes first
        self.ok, self.rate, self.channels = True, event.rate, event.channels
        log.info(
            "audio device opened direction=%s device=%r rate=%d channels=%d",
            event.direction, event.name, event.rate, event.channels,
        )  # fmt: skip

    def _failed(self, event: DeviceFailed) -> None:
        self.ok = False
        self.failures += 1
        self.error = event.message  # names the device already
        log.warning("audio device failed direction=%s device=%r error=%r", event.direction, event.name, event.message)
        self._on_failed(event)


def _send(channel: trio.MemorySendChannel[Any], event: object) -> None:
    """Deliver a device event unless its loop is gone (never raise into Trio's run loop)."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        channel.send_nowait(event)

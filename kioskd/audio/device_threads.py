"""The threads that drive sound devices: one stream each, for one open-to-failure lifetime.

A *device thread* (:class:`CaptureThread`, :class:`PlaybackThread`) owns one stream: it
opens it, loops over device periods, and reports everything to Trio as values through
:class:`~kioskd.hardware.handoff.ToTrio` (never blocking): :class:`~kioskd.audio.devices.DeviceOpened`
once, then data, then at most one :class:`~kioskd.audio.devices.DeviceFailed`. The engine
reopens with backoff by starting a new thread. A thread never dies silently: any
exception, even a bug, becomes a ``DeviceFailed``.

Clocks: device threads use ``time.monotonic()``; :class:`~kioskd.audio.pacer.Pacer` paces
clockless devices.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np
import trio

from kioskd.audio.devices import DeviceFailed, DeviceOpened, Direction, Stream, open_stream
from kioskd.audio.errors import DeviceError
from kioskd.audio.pacer import Pacer
from kioskd.audio.ring import SampleRing
from kioskd.config import Pacing
from kioskd.hardware.handoff import ToTrio

__all__ = ["CaptureThread", "Listening", "PlaybackSource", "PlaybackThread", "name_os_thread"]

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 2.0
"""Longest wait for a device thread to close its stream on shutdown."""
WRITABLE_WAIT_PERIODS = 1.5
"""Longest wait (in periods) for room in the device before writing anyway (a blocking write)."""
WRITABLE_POLL_MIN_S = 0.0005
"""Shortest sleep while waiting for room in the device."""

_PR_SET_NAME = 15
"""prctl option naming the calling thread (Linux)."""


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` in the OS too (``top -H``, ``/proc/PID/task/*/comm``)."""
    global _libc
    if _libc is None:
        path = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(path, use_errno=True) if path else False
        except OSError:  # pragma: no cover - no libc to load
            _libc = False
    prctl = getattr(_libc, "prctl", None) if _libc else None
    if prctl is not None:  # Linux
        prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


_libc: Any = None


class _DeviceThread:
    """Common life cycle: open → loop periods → close; every end is reported once."""

    direction: Direction

    def __init__(
        self,
        name: str,
        rate: int,
        period_ms: int,
        token: trio.lowlevel.TrioToken,
        on_event: Callable[[DeviceOpened | DeviceFailed], object],
        pacing: Pacing = "auto",
        opener: Callable[[str, Direction, int, int], Stream] = open_stream,
    ) -> None:
        """Prepare (not start) a thread for device ``name``."""
        self.name = name
        self.rate = rate
        self.period_ms = period_ms
        self.pacing: Pacing = pacing
        self._port = ToTrio(token)
        self._on_event = on_event
        self._opener = opener
        self._stop = threading.Event()
        self._pacer: Pacer | None = None
        self._thread = threading.Thread(target=self._main, name=f"kioskd-{self.direction}", daemon=True)

    def start(self) -> None:
        """Start the thread; it opens the device itself (opening can block)."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to close its stream and end (returns at once)."""
        self._stop.set()

    def join(self, timeout: float = JOIN_TIMEOUT) -> bool:
        """Wait (blocking) for the thread to end; True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _main(self) -> None:
        name_os_thread(self._thread.name)
        stream: Stream | None = None
        try:
            stream = self._opener(self.name, self.direction, self.rate, self.period_ms)
            self._port.post(self._on_event, DeviceOpened(self.direction, stream.name, stream.rate, stream.channels))
            period = max(1, stream.rate * self.period_ms // 1000)
            mode: Pacing = self.pacing
            if mode == "auto" and stream.clocked is not None:
                mode = "device" if stream.clocked else "clock"
            pacer = self._pacer = Pacer(stream.rate, period, mode)
            self._setup(stream)
            while not self._stop.is_set() and self._port.alive:
                t = time.monotonic()
                moved = self._period(stream, period)
                if moved:  # 0: the thread stood still on purpose (an idle speaker)
                    pacer.io_done(moved, time.monotonic() - t)
        except BaseException as exc:  # every end of the thread becomes a reported value
            message = str(exc) if isinstance(exc, DeviceError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, (DeviceError, OSError)):
                log.error("audio thread crashed direction=%s device=%s", self.direction, self.name, exc_info=True)
            self._port.post(self._on_event, DeviceFailed(self.direction, self.name, message))
        finally:
            if stream is not None:
                try:
                    stream.close()
                except Exception as exc:
                    log.warning("audio close failed direction=%s device=%s error=%r", self.direction, self.name, exc)

    def _setup(self, stream: Stream) -> None:
        """Called once the stream is open (threads set up their converters here)."""

    def _period(self, stream: Stream, frames: int) -> int:
        """Move about one period (``frames``); return the frames actually moved."""
        raise NotImplementedError


_EPOCHS = itertools.count(1)
GATE_MARGIN_DB = 6.0
"""The level gate opens this much below the threshold asked for (see :class:`CaptureThread`)."""
_FULL_SCALE = 32768.0


def _loud(data: np.ndarray, period_samples: int, dbfs: float) -> bool:
    """Whether some period of ``period_samples`` samples has an RMS of at least ``dbfs`` − margin."""
    periods = len(data) // max(1, period_samples)
    if periods == 0:
        return False
    level = _FULL_SCALE * 10 ** ((dbfs - GATE_MARGIN_DB) / 20)
    head = data[: periods * period_samples]
    if max(int(head.max()), -int(head.min())) < level:
        return False  # an RMS is never above the peak: a quiet room costs two reductions
    x = head.reshape(periods, period_samples).astype(np.float32)
    power = np.einsum("ij,ij->i", x, x) / period_samples
    return bool(power.max() >= level**2)


class Listening(NamedTuple):
    """What :meth:`CaptureThread.listen` returns: the epoch of the blocks to come and the ring."""

    epoch: int
    raw: np.ndarray | None
    """The raw pre-roll (interleaved device samples), when listening just started."""
    rate: int
    channels: int


class CaptureThread(_DeviceThread):
    """Reads device blocks; posts ``on_data(samples, rate, channels)`` to Trio while listening.

    Every block also goes into a ring of the last ``preroll_ms`` of raw device samples.
    While nobody listens (:meth:`listen` False) nothing is handed to Trio at all: the
    ring is the pre-roll, and :meth:`listen` (True) returns it, so the audio handed over
    from then on continues it exactly (the ring write and the listening check share one
    lock). :attr:`block_periods` (set from any thread; read before every read) makes
    each read that many periods long: fewer wake-ups while nobody needs the audio at once.

    **Level gate.** While not listening, if :attr:`gate_dbfs` is set, a block in which
    some 10 ms period is at least that loud (less :data:`GATE_MARGIN_DB`, so no frame the
    listener would take is missed after downmix and resampling) is posted to
    ``on_loud(samples, rate, channels, start)`` (``start``: the block's first frame
    since the device opened). A quiet room costs one level check per block.
    """

    direction: Direction = "input"

    def __init__(
        self,
        *args: Any,
        on_data: Callable[[np.ndarray, int, int, int], object],
        preroll_ms: int = 0,
        listening: bool = True,
        on_loud: Callable[[np.ndarray, int, int, int], object] | None = None,
        **kwargs: Any,
    ) -> None:
        """Like :class:`_DeviceThread`, plus ``on_data(samples, rate, channels, epoch)`` (run
        on the Trio thread), the ring of ``preroll_ms`` and the level gate's ``on_loud``."""
        super().__init__(*args, **kwargs)
        self._on_data = on_data
        self._on_loud = on_loud
        self.gate_dbfs: float | None = None
        """Post loud blocks to ``on_loud`` while not listening (set from any thread)."""
        self.block_periods = 1
        self._preroll_ms = preroll_ms
        self._lock = threading.Lock()
        self._listening = listening
        self.epoch = next(_EPOCHS)
        """Tags the blocks of one listening period (a new one at every :meth:`listen` True)."""
        self._ring: SampleRing | None = None
        self._format = (0, 0)
        self.frames_read = 0
        """Device frames read since the stream opened (written by the thread)."""
        self.blocks_posted = 0
        """Blocks handed to Trio (written by the thread)."""

    def listen(self, on: bool) -> Listening:
        """Hand blocks to Trio from now on (True) or stop (False).

        Starting begins a new epoch and returns the ring's raw samples (interleaved; None
        before the device is open); blocks posted from then on carry the new epoch, so
        the receiver can tell them from blocks of an earlier period still in flight.
        """
        with self._lock:
            was, self._listening = self._listening, on
            if not on or was:
                return Listening(self.epoch, None, *self._format)
            self.epoch = next(_EPOCHS)
            raw = None if self._ring is None else self._ring.snapshot()
            return Listening(self.epoch, raw, *self._format)

    def _setup(self, stream: Stream) -> None:
        with self._lock:
            self._ring = SampleRing(stream.rate * self._preroll_ms // 1000 * stream.channels)
            self._format = (stream.rate, stream.channels)

    def _period(self, stream: Stream, frames: int) -> int:
        period_samples = frames * stream.channels
        frames *= max(1, self.block_periods)
        data = stream.read(frames)
        with self._lock:
            if self._ring is not None:
                self._ring.write(data)
            post, epoch = self._listening, self.epoch
        start = self.frames_read
        self.frames_read += frames
        if post:
            self.blocks_posted += 1
            self._port.post(self._on_data, data, stream.rate, stream.channels, epoch)
        elif self._on_loud is not None and (gate := self.gate_dbfs) is not None and _loud(data, period_samples, gate):
            self.blocks_posted += 1
            self._port.post(self._on_loud, data, stream.rate, stream.channels, start)
        return frames


class PlaybackSource(Protocol):
    """Where a :class:`PlaybackThread` gets its periods (:class:`kioskd.audio.speaker.Speaker`)."""

    def pull(self, frames: int, rate: int, channels: int) -> np.ndarray | None:
        """Exactly ``frames`` interleaved frames to write, or None while idle (quick, thread-safe)."""
        ...

    def wait(self, stop: threading.Event) -> None:
        """Block until there is audio to play or ``stop`` is set."""
        ...

    def wake(self) -> None:
        """Make a blocked :meth:`wait` look at ``stop`` again."""
        ...


class PlaybackThread(_DeviceThread):
    """Writes the periods ``source.pull(frames, rate, channels)`` returns (called in this thread).

    On a clocked device that reports ``get_write_available()`` the thread first waits
    (sleeping, polling) until the device has room for a whole period, and only then takes
    the period from the source and writes it, which no longer blocks. So the thread never
    holds audio it has taken but not yet handed to the device: what an interruption
    changes in the source is heard right after what is already in the device. A device
    that never reports room within :data:`WRITABLE_WAIT_PERIODS` gets a blocking write
    as before; clockless devices (paced by :class:`Pacer`) and streams without the method
    are written at once.

    While the source is idle (``pull`` returns None) the thread pauses the stream (if it
    can ``pause()``), sleeps in ``source.wait`` and resumes when audio arrives: an idle
    speaker costs nothing per period.
    """

    direction: Direction = "output"

    def __init__(self, *args: Any, source: PlaybackSource, **kwargs: Any) -> None:
        """Like :class:`_DeviceThread`, plus the sample source."""
        super().__init__(*args, **kwargs)
        self._source = source
        self._writable: Callable[[], int] | None = None
        self.pauses = 0

    def stop(self) -> None:
        """Ask the thread to end, waking it if it waits for audio."""
        super().stop()
        self._source.wake()

    def _setup(self, stream: Stream) -> None:
        if stream.clocked is not False:
            self._writable = getattr(stream, "get_write_available", None)

    def _period(self, stream: Stream, frames: int) -> int:
        if self._writable is not None and not (self._pacer is not None and self._pacer.mode == "clock"):
            self._wait_writable(self._writable, frames, stream.rate)
        samples = self._source.pull(frames, stream.rate, stream.channels)
        if samples is None:
            self._idle(stream)
            return 0
        stream.write(samples)
        return frames

    def _idle(self, stream: Stream) -> None:
        """Pause the device until the source has audio again (or the thread is stopped)."""
        pause: Callable[[], None] | None = getattr(stream, "pause", None)
        resume: Callable[[], None] | None = getattr(stream, "resume", None)
        self.pauses += 1
        if pause is not None:
            pause()
        self._source.wait(self._stop)
        if resume is not None and not self._stop.is_set():
            resume()
        if self._pacer is not None:
            self._pacer.restart()

    def _wait_writable(self, writable: Callable[[], int], frames: int, rate: int) -> None:
        """Sleep until ``frames`` fit in the device (or the wait is given up on)."""
        deadline = time.monotonic() + WRITABLE_WAIT_PERIODS * frames / rate
        while not self._stop.is_set():
            room = writable()
            if room >= frames:
                return
            now = time.monotonic()
            if now >= deadline:
                return
            time.sleep(min(deadline - now, max(WRITABLE_POLL_MIN_S, (frames - room) / rate)))

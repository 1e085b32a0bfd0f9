"""Sound devices: PyAudio (PortAudio/ALSA) streams and the threads that drive them.

A *stream* is one open device in one direction (:class:`Stream`): ``read(frames)`` /
``write(samples)`` of interleaved int16 at the device's own rate and channels. The
``wav:PATH`` streams in :mod:`kioskd.audio.wavio` have the same shape.

A *device thread* (:class:`CaptureThread`, :class:`PlaybackThread`) owns one stream for
one open-to-failure lifetime: it opens the stream, loops over device periods, and reports
everything to Trio as values through :class:`~kioskd.hardware.handoff.ToTrio` (never blocking):
:class:`DeviceOpened` once, then data, then at most one :class:`DeviceFailed`. The engine
reopens with backoff by starting a new thread. A thread never dies silently: any
exception, even a bug, becomes a :class:`DeviceFailed`.

Clocks: device threads use ``time.monotonic()``. Clockless devices (ALSA ``type file``
PCMs, WAV files) return at once from reads and writes; :class:`Pacer` then paces the
loop against the monotonic clock so the same code serves real and clockless devices.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import trio

from kioskd.audio.errors import DeviceError
from kioskd.audio.ring import SampleRing
from kioskd.config import Pacing
from kioskd.hardware.handoff import ToTrio

log = logging.getLogger(__name__)

__all__ = [
    "CaptureThread",
    "DeviceError",
    "DeviceFailed",
    "DeviceInfo",
    "DeviceOpened",
    "Direction",
    "Listening",
    "Pacer",
    "PlaybackSource",
    "PlaybackThread",
    "PyAudioStream",
    "Stream",
    "default_devices",
    "list_devices",
    "open_stream",
    "quiet_alsa",
    "quiet_jack",
]

Direction = Literal["input", "output"]

DETECT_SECONDS = 0.3
"""Audio time over which ``auto`` pacing measures whether the device blocks."""
BLOCKED_FRACTION = 0.2
"""A device that blocked for less than this share of the audio time has no clock."""
DETECT_SLACK_PERIODS = 3
"""While detecting, sleep only when this many periods ahead of the monotonic clock."""
MAX_LAG_SECONDS = 0.2
"""A paced loop further behind than this re-anchors instead of bursting to catch up."""
STEREO = 2
"""A device with exactly this many channels is opened in stereo (see :func:`choose_channels`)."""
JOIN_TIMEOUT = 2.0
"""Longest wait for a device thread to close its stream on shutdown."""
WRITABLE_WAIT_PERIODS = 1.5
"""Longest wait (in periods) for room in the device before writing anyway (a blocking write)."""
WRITABLE_POLL_MIN_S = 0.0005
"""Shortest sleep while waiting for room in the device."""

_PA_LOCK = threading.Lock()
"""PortAudio's init/open/close are not thread-safe: one at a time, process-wide."""


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device as ``kioskd devices`` shows it."""

    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_rate: int


@dataclass(frozen=True)
class DeviceOpened:
    """Reported once when a device thread has its stream open."""

    direction: Direction
    name: str
    rate: int
    channels: int


@dataclass(frozen=True)
class DeviceFailed:
    """Reported once when a device thread ends on an error (open, read, write, bug)."""

    direction: Direction
    name: str
    message: str


class Stream(Protocol):
    """One open device in one direction; interleaved int16 at ``rate``/``channels``."""

    name: str
    rate: int
    channels: int
    clocked: bool | None
    """True: I/O blocks in real time; False: returns at once (pace it); None: detect."""

    def read(self, frames: int) -> np.ndarray:
        """``frames`` frames of interleaved int16 (capture streams)."""
        ...

    def write(self, samples: np.ndarray) -> None:
        """Play interleaved int16 (playback streams)."""
        ...

    def close(self) -> None:
        """Release the device; safe to call twice."""
        ...


# Optional on a playback stream (looked up with getattr): ``get_write_available() -> int``
# (frames writable without blocking), ``pause()`` / ``resume()`` (stop and restart the
# device while the speaker is idle; a stream without them is simply not written then).


# --------------------------------------------------------------------------- ALSA noise

_alsa_handler: Any = None


def quiet_alsa() -> None:
    """Silence libasound's stderr chatter about absent cards (harmless, but noisy)."""
    global _alsa_handler
    if _alsa_handler is not None:
        return
    path = ctypes.util.find_library("asound")
    if not path:
        return
    try:
        lib = ctypes.CDLL(path)
        proto = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p)
        _alsa_handler = proto(lambda *args: None)
        lib.snd_lib_error_set_handler(_alsa_handler)
    except (OSError, AttributeError):  # pragma: no cover - no ALSA here
        _alsa_handler = False


_jack_handler: Any = None


def quiet_jack() -> None:
    """Silence libjack: PortAudio probes for a JACK server on every init and libjack prints
    "Cannot connect to server socket" (and more) on stderr each time, outside the log format."""
    global _jack_handler
    if _jack_handler is not None:
        return
    path = ctypes.util.find_library("jack")
    if not path:
        _jack_handler = False
        return
    try:
        lib = ctypes.CDLL(path)
        _jack_handler = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(lambda message: None)
        lib.jack_set_error_function(_jack_handler)
        lib.jack_set_info_function(_jack_handler)
    except (OSError, AttributeError):  # pragma: no cover - a libjack without these
        _jack_handler = False


# --------------------------------------------------------------------------- PyAudio


def _pyaudio() -> Any:
    import pyaudio  # late import: `kioskd ctl` and the pure modules must not need PortAudio

    quiet_alsa()
    quiet_jack()
    return pyaudio


def list_devices() -> list[DeviceInfo]:
    """Every PortAudio device with its channels and default rate (opens PortAudio briefly)."""
    pyaudio = _pyaudio()
    with _PA_LOCK:
        pa = pyaudio.PyAudio()
        try:
            return [_info(pa.get_device_info_by_index(i)) for i in range(pa.get_device_count())]
        finally:
            pa.terminate()


def default_devices() -> dict[Direction, str | None]:
    """The device PortAudio opens for ``default`` in each direction (None: there is none)."""
    pyaudio = _pyaudio()
    out: dict[Direction, str | None] = {}
    with _PA_LOCK:
        pa = pyaudio.PyAudio()
        try:
            lookups: tuple[tuple[Direction, Callable[[], dict[str, Any]]], ...] = (
                ("input", pa.get_default_input_device_info),
                ("output", pa.get_default_output_device_info),
            )
            for direction, get in lookups:
                try:
                    out[direction] = str(get()["name"])
                except OSError:
                    out[direction] = None
        finally:
            pa.terminate()
    return out


def _info(d: dict[str, Any]) -> DeviceInfo:
    return DeviceInfo(
        index=int(d["index"]),
        name=str(d["name"]),
        max_input_channels=int(d["maxInputChannels"]),
        max_output_channels=int(d["maxOutputChannels"]),
        default_rate=int(d["defaultSampleRate"]),
    )


def find_device(devices: list[DeviceInfo], name: str, direction: Direction) -> DeviceInfo | None:
    """The device named ``name``: exact name first, then a case-insensitive substring."""
    usable = [d for d in devices if (d.max_input_channels if direction == "input" else d.max_output_channels) > 0]
    for d in usable:
        if d.name == name:
            return d
    for d in usable:
        if name.lower() in d.name.lower():
            return d
    return None


class PyAudioStream:
    """A blocking PortAudio stream on its own ``PyAudio`` instance (see :func:`open_stream`)."""

    clocked: bool | None = None

    def __init__(self, pa: Any, stream: Any, name: str, rate: int, channels: int) -> None:
        """Wrap an already started stream; use :func:`open_stream`."""
        self._pa = pa
        self._stream = stream
        self.name = name
        self.rate = rate
        self.channels = channels

    def read(self, frames: int) -> np.ndarray:
        """Read ``frames`` frames (overflows are not errors: the data is simply older)."""
        data = self._stream.read(frames, exception_on_overflow=False)
        return np.frombuffer(data, dtype="<i2").astype(np.int16)

    def write(self, samples: np.ndarray) -> None:
        """Write interleaved int16; blocks while the device buffer is full."""
        self._stream.write(np.asarray(samples, dtype="<i2").tobytes(), exception_on_underflow=False)

    def get_write_available(self) -> int:
        """Frames that can be written now without blocking."""
        return int(self._stream.get_write_available())

    def pause(self) -> None:
        """Stop the device once what was written has played (the speaker is idle)."""
        self._stream.stop_stream()

    def resume(self) -> None:
        """Start the device again after :meth:`pause`."""
        self._stream.start_stream()

    def close(self) -> None:
        """Stop and close the stream and terminate this PortAudio instance."""
        with _PA_LOCK:
            stream, self._stream = self._stream, None
            if stream is not None:
                for step in (stream.stop_stream, stream.close):
                    try:
                        step()
                    except Exception as exc:  # closing a vanished device may fail; it is gone anyway
                        log.debug("audio close step failed device=%s error=%r", self.name, exc)
            if self._pa is not None:
                self._pa.terminate()
                self._pa = None


def open_stream(name: str, direction: Direction, rate: int, period_frames_ms: int) -> Stream:
    """Open device ``name`` (``wav:PATH``, ``default`` or a PortAudio name/substring).

    ``rate`` 0 means the device's default rate; channels per :func:`choose_channels`.
    Raises :class:`DeviceError` naming the device.
    """
    if name.startswith("wav:"):
        from kioskd.audio import wavio

        return wavio.open_wav(name[4:], direction, rate)
    pyaudio = _pyaudio()
    with _PA_LOCK:
        pa = pyaudio.PyAudio()
        try:
            return _open_pa(pyaudio, pa, name, direction, rate, period_frames_ms)
        except BaseException:
            pa.terminate()
            raise


def _open_pa(pyaudio: Any, pa: Any, name: str, direction: Direction, rate: int, period_ms: int) -> Stream:
    devices = [_info(pa.get_device_info_by_index(i)) for i in range(pa.get_device_count())]
    info = find_device(devices, name, direction)
    if info is None and name == "default":
        try:
            is_input = direction == "input"
            default = pa.get_default_input_device_info() if is_input else pa.get_default_output_device_info()
            info = _info(default)
        except OSError:
            info = None
    if info is None:
        known = ", ".join(d.name for d in find_usable(devices, direction)) or "none"
        raise DeviceError(f"no {direction} device matches {name!r} (available: {known})")
    rate = rate or info.default_rate
    max_ch = info.max_input_channels if direction == "input" else info.max_output_channels
    channels = choose_channels(max_ch)
    period = max(1, rate * period_ms // 1000)
    kwargs: dict[str, Any] = {
        "format": pyaudio.paInt16,
        "channels": channels,
        "rate": rate,
        "frames_per_buffer": period,
        direction: True,
        f"{direction}_device_index": info.index,
    }
    try:
        stream = pa.open(**kwargs)
    except (OSError, ValueError) as exc:
        raise DeviceError(f"cannot open {direction} device {info.name!r} at {rate} Hz x{channels}: {exc}") from None
    return PyAudioStream(pa, stream, info.name, rate, channels)


def find_usable(devices: list[DeviceInfo], direction: Direction) -> list[DeviceInfo]:
    """The devices that have channels in ``direction``."""
    return [d for d in devices if (d.max_input_channels if direction == "input" else d.max_output_channels) > 0]


def choose_channels(max_channels: int) -> int:
    """Channels to open: 2 on a device with exactly two (a stereo card or USB device:
    both mic channels are averaged, both speakers get the signal), else mono. Devices
    reporting more are ALSA plugins (``default``, ``plug``, PulseAudio) that convert."""
    return STEREO if max_channels == STEREO else 1


# --------------------------------------------------------------------------- pacing


class Pacer:
    """Keeps a device loop in real time on the monotonic clock when the device has none.

    Call :meth:`io_done` after every read/write with the frames moved and the seconds the
    call itself took. ``clock`` mode always paces; ``device`` never does; ``auto``
    watches the first :data:`DETECT_SECONDS` of audio: a device that blocked for less
    than :data:`BLOCKED_FRACTION` of it has no clock and is paced from then on (meanwhile
    it is paced loosely, with :data:`DETECT_SLACK_PERIODS` of slack, so a real device
    never waits on us). Pure: the clock and sleep are injected.
    """

    def __init__(
        self,
        rate: int,
        period_frames: int,
        mode: Pacing = "auto",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Start the schedule now."""
        self.rate = rate
        self.mode: Pacing = mode
        self._clock = clock
        self._sleep = sleep
        self._slack = DETECT_SLACK_PERIODS * period_frames / rate
        self._t0 = clock()
        self._frames = 0  # since _t0 (the schedule)
        self._detect_frames = 0  # since the start (for ``auto``)
        self._blocked = 0.0

    def restart(self) -> None:
        """Start a new schedule now (after the loop deliberately stood still)."""
        self._t0, self._frames = self._clock(), 0

    @property
    def paced(self) -> bool | None:
        """Whether the loop is paced on the clock (None while ``auto`` is still deciding)."""
        return {"clock": True, "device": False}.get(self.mode)

    def io_done(self, frames: int, io_seconds: float) -> None:
        """Account for one I/O call; sleep if the loop runs ahead of real time."""
        if self.mode == "device":
            return
        self._frames += frames
        audio = self._frames / self.rate
        if self.mode == "auto":
            self._blocked += io_seconds
            self._detect_frames += frames
            heard = self._detect_frames / self.rate
            if heard >= DETECT_SECONDS:
                self.mode = "clock" if self._blocked < BLOCKED_FRACTION * heard else "device"
                log.debug("audio pacing decided mode=%s blocked=%.3f audio=%.3f", self.mode, self._blocked, heard)
                if self.mode == "device":
                    return
        now = self._clock()
        ahead = self._t0 + audio - now
        if ahead < -MAX_LAG_SECONDS:  # stalled (or a very slow device): start a new schedule
            self._t0, self._frames = now, 0
        elif ahead > (self._slack if self.mode == "auto" else 0.0):
            self._sleep(ahead)


# --------------------------------------------------------------------------- threads

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
    x = data[: periods * period_samples].reshape(periods, period_samples).astype(np.float32)
    power = np.einsum("ij,ij->i", x, x) / period_samples
    threshold = (_FULL_SCALE * 10 ** ((dbfs - GATE_MARGIN_DB) / 20)) ** 2
    return bool(power.max() >= threshold)


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

"""Sound devices: PyAudio (PortAudio/ALSA) streams, found by name and opened.

A *stream* is one open device in one direction (:class:`Stream`): ``read(frames)`` /
``write(samples)`` of interleaved int16 at the device's own rate and channels. The
``wav:PATH`` streams in :mod:`kioskd.audio.wavio` have the same shape. The threads that
drive streams are in :mod:`kioskd.audio.device_threads`; they report :class:`DeviceOpened`
once, then data, then at most one :class:`DeviceFailed`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from kioskd.audio.errors import DeviceError

log = logging.getLogger(__name__)

__all__ = [
    "DeviceError",
    "DeviceFailed",
    "DeviceInfo",
    "DeviceOpened",
    "Direction",
    "PyAudioStream",
    "Stream",
    "default_devices",
    "list_devices",
    "open_stream",
    "quiet_alsa",
    "quiet_jack",
]

Direction = Literal["input", "output"]

STEREO = 2
"""A device with exactly this many channels is opened in stereo (see :func:`choose_channels`)."""

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

"""ALSA ``type file`` PCMs for tests: real ALSA → PortAudio → kioskd without a sound card.

:func:`alsa_devices` writes one ALSA config defining, for each device, a capture PCM
that reads raw S16_LE from ``<dir>/<name>.in.raw`` and/or a playback PCM that writes
raw S16_LE to ``<dir>/<name>.out.raw``, both over the ``null`` PCM (which accepts any
rate and channel count). ``DEVICES`` records the channels a test writes/expects; a file
PCM reports many channels, so stereo tests make kioskd choose two (monkeypatching
``devices.choose_channels``). A two-channel ``multi`` wrapped around or under the file
PCM garbles the data (alsa-lib 1.2.8), so it is not used. It then points
``ALSA_CONFIG_PATH`` at the system ``alsa.conf`` followed by this file; alsa-lib reads
it at every PortAudio initialisation, and kioskd initialises PortAudio per open, so
setting it in the test process before the first open is enough.

The config is process-wide (ALSA has one global configuration), so it is written once
per test session with every device the tests use; tests write the ``.in.raw`` files
before opening a device. Such PCMs have no clock: reads and writes return at once.
After the end of an ``infile`` a capture returns stale buffer contents, so compare only
the file's length.

PortAudio enumerates devices only when its first instance initialises: a capture PCM
whose infile is missing is listed without input channels, and while any PortAudio stream
is open the list is not refreshed. ``kiosk_mic_gone`` tests therefore use a ``wav:``
output, so the input's reopen re-enumerates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"
PACING = "clock"
"""``[audio] pacing`` for these PCMs: they have no clock, so the tests say so (as an operator
would) instead of leaving it to ``auto``, whose measurement takes a file PCM for a sound
card when the machine is slow or loaded (under emulation, beside the suite)."""

DEVICES: dict[str, tuple[str, int]] = {
    # name: (direction, channels)
    "kiosk_mic": ("input", 1),
    "kiosk_mic48": ("input", 2),
    "kiosk_mic_gone": ("input", 1),
    "kiosk_spk": ("output", 1),
    "kiosk_spk48": ("output", 2),
}
"""Every test device; ``kiosk_mic_gone``'s infile is absent until a test creates it."""


@dataclass(frozen=True)
class AlsaFiles:
    """Where the config and each device's raw files live."""

    directory: Path
    config: Path

    def infile(self, name: str) -> Path:
        """The raw S16_LE file capture device ``name`` reads."""
        return self.directory / f"{name}.in.raw"

    def outfile(self, name: str) -> Path:
        """The raw S16_LE file playback device ``name`` writes."""
        return self.directory / f"{name}.out.raw"

    def write_input(self, name: str, samples: np.ndarray) -> None:
        """Put interleaved int16 ``samples`` in ``name``'s infile."""
        self.infile(name).write_bytes(np.asarray(samples, dtype="<i2").tobytes())

    def read_output(self, name: str) -> np.ndarray:
        """What playback device ``name`` wrote so far (interleaved int16)."""
        path = self.outfile(name)
        data = path.read_bytes() if path.exists() else b""
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int16)


def render_config(files: AlsaFiles) -> str:
    """The ALSA config text for :data:`DEVICES` under ``files.directory``."""
    parts = []
    for name, (direction, _) in DEVICES.items():
        if direction == "input":
            io = f'  file "/dev/null"\n  infile "{files.infile(name)}"\n'
        else:
            io = f'  file "{files.outfile(name)}"\n'
        parts.append(
            f'pcm.{name} {{\n  type file\n  slave.pcm "null"\n{io}  format "raw"\n'
            f'  hint {{ show on description "{name}" }}\n}}\n'
        )
    return "\n".join(parts)


PLACEHOLDER_FRAMES = 48000
"""Silence each infile holds until a test writes its own (an infile must exist to be listed)."""

_current: AlsaFiles | None = None


def alsa_devices(directory: Path) -> AlsaFiles:
    """Write the config under ``directory`` (first call only) and set ``ALSA_CONFIG_PATH``."""
    global _current
    if _current is None:
        directory.mkdir(parents=True, exist_ok=True)
        files = AlsaFiles(directory, directory / "asound.conf")
        files.config.write_text(render_config(files))
        for name, (direction, channels) in DEVICES.items():
            if direction == "input" and name != "kiosk_mic_gone":  # PortAudio probes at enumeration
                files.write_input(name, np.zeros(PLACEHOLDER_FRAMES * channels, dtype=np.int16))
        _current = files
    os.environ["ALSA_CONFIG_PATH"] = f"{SYSTEM_ALSA_CONF}:{_current.config}"
    return _current

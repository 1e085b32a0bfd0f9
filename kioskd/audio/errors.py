"""The one error every audio device raises (PortAudio streams and ``wav:`` files alike)."""

from __future__ import annotations

__all__ = ["DeviceError"]


class DeviceError(Exception):
    """A device could not be opened, read or written; the message names it and why."""

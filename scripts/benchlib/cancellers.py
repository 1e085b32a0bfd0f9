"""Echo cancellers measured beside kioskd's own (figure 8): the same far queue, another core.

* ``aec3``: pywebrtc-audio's WebRTC AEC3 at its defaults (kioskd's canceller before issue
  11; ``pip install pywebrtc-audio``). Its wheel exposes no ``EchoCanceller3Config``, and
  Debian 12's ``libwebrtc-audio-processing`` is the 0.3 branch (AEC2, no AEC3), so a
  tuned AEC3 cannot be built from apt on Raspberry Pi OS Bookworm.
* ``speexdsp``: speexdsp's MDF canceller (300 ms filter) plus its preprocessor's residual
  echo suppression (``libspeexdsp1`` from apt, through ctypes).

Each is skipped when its library is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any

import numpy as np

from kioskd.audio.echo import EchoCanceller

RATE = 16000
FRAME = 160
SPEEX_TAIL_MS = 300  # covers a 200 ms delay plus the tail
SPEEX_ECHO_SET_SAMPLING_RATE = 24
SPEEX_PREPROCESS_SET_DENOISE = 0
SPEEX_PREPROCESS_SET_NOISE_SUPPRESS = 18
SPEEX_PREPROCESS_SET_ECHO_STATE = 24
SPEEX_NOISE_SUPPRESS_DB = -1  # denoise must be on for echo suppression to run; keep it mild


class Aec3(EchoCanceller):
    """kioskd's far queue in front of pywebrtc-audio's AEC3."""

    def __init__(self) -> None:
        import pywebrtc_audio

        super().__init__(RATE)
        self._aec = pywebrtc_audio.EchoCanceller(RATE, 1, 0)

    def _cancel(self, far: np.ndarray, near: np.ndarray, shifts: list[list[int]]) -> np.ndarray:
        far = far.astype(np.int16)
        out = [np.asarray(self._aec.process(d, x), dtype=np.int16).reshape(-1) for x, d in zip(far, near, strict=True)]
        return np.stack(out)


def _speex() -> Any:
    name = ctypes.util.find_library("speexdsp") or "libspeexdsp.so.1"
    lib = ctypes.CDLL(name)
    lib.speex_echo_state_init_mc.restype = ctypes.c_void_p
    lib.speex_echo_state_init_mc.argtypes = [ctypes.c_int] * 4
    lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] * 4
    lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
    lib.speex_preprocess_state_init.restype = ctypes.c_void_p
    lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_preprocess_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_preprocess_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.speex_preprocess_state_destroy.argtypes = [ctypes.c_void_p]
    return lib


class Speex(EchoCanceller):
    """kioskd's far queue in front of speexdsp's MDF canceller and residual echo suppressor."""

    def __init__(self) -> None:
        super().__init__(RATE)
        self._lib = lib = _speex()
        self._st = lib.speex_echo_state_init_mc(FRAME, RATE * SPEEX_TAIL_MS // 1000, 1, 1)
        self._pp = lib.speex_preprocess_state_init(FRAME, RATE)
        lib.speex_echo_ctl(self._st, SPEEX_ECHO_SET_SAMPLING_RATE, ctypes.byref(ctypes.c_int(RATE)))
        lib.speex_preprocess_ctl(self._pp, SPEEX_PREPROCESS_SET_ECHO_STATE, ctypes.c_void_p(self._st))
        lib.speex_preprocess_ctl(self._pp, SPEEX_PREPROCESS_SET_DENOISE, ctypes.byref(ctypes.c_int(1)))
        lib.speex_preprocess_ctl(self._pp, SPEEX_PREPROCESS_SET_NOISE_SUPPRESS,
                                 ctypes.byref(ctypes.c_int(SPEEX_NOISE_SUPPRESS_DB)))

    def _cancel(self, far: np.ndarray, near: np.ndarray, shifts: list[list[int]]) -> np.ndarray:
        far = np.ascontiguousarray(far, dtype=np.int16)
        near = np.ascontiguousarray(near, dtype=np.int16)
        out = np.empty_like(near)
        for x, d, o in zip(far, near, out, strict=True):
            self._lib.speex_echo_cancellation(self._st, d.ctypes.data, x.ctypes.data, o.ctypes.data)
            self._lib.speex_preprocess_run(self._pp, o.ctypes.data)
        return out

    def __del__(self) -> None:
        self._lib.speex_preprocess_state_destroy(self._pp)
        self._lib.speex_echo_state_destroy(self._st)


def available() -> dict[str, Callable[[], EchoCanceller]]:
    """The other cancellers that can run here, by name."""
    out: dict[str, Callable[[], EchoCanceller]] = {}
    for name, cls in (("aec3", Aec3), ("speexdsp", Speex)):
        try:
            cls()
        except (ImportError, OSError):
            continue
        out[name] = cls
    return out

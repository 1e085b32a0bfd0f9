"""A kiosk against the simulator, in-process, on real loopback sockets (shared by e2e tests)."""

from __future__ import annotations

import io
import logging
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trio

from board_wait import wait_for_status
from kioskd.audio.engine import AudioEngine
from kioskd.config import Config, parse_config
from kioskd.ops.ctl import request
from kioskd.ops.logs import setup_logging
from kioskd.service.daemon import Kiosk
from kioskd.simulator import Simulator
from kioskd.state import KioskState

SPEECH_WAV = Path(__file__).resolve().parent.parent / "kioskd" / "data" / "visitor.wav"


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Samples (int16 mono) and rate of a WAV file."""
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16), w.getframerate()


def kiosk_config(sim: Simulator, tmp: Path, **sections: dict[str, Any]) -> Config:
    """A kiosk config for ``sim``: WAV microphone and speaker, manual trigger, socket in ``tmp``."""
    token = tmp / "token"
    token.write_text(sim.config.kiosk_token)
    data: dict[str, Any] = {
        "kiosk": {"id": "test-kiosk", "location": "test bench"},
        "agent": {"agent_id": sim.config.agent_id},
        "backend": {"url": sim.backend_url, "token_file": str(token)},
        "audio": {"input": f"wav:{SPEECH_WAV}", "output": f"wav:{tmp / 'out.wav'}", "output_rate": 16000,
                  "echo": "off"},
        "trigger": {"mode": "manual"},
        "control": {"socket": str(tmp / "control.sock")},
        "log": {"level": "debug"},
        "state": {"file": str(tmp / "state.json")},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data)


@dataclass
class RunningKiosk:
    kiosk: Kiosk
    socket: str
    log: io.StringIO

    async def ctl(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """What ``kioskd ctl CMD`` would print, over the real control socket."""
        return await trio.to_thread.run_sync(lambda: request(self.socket, cmd, 30.0, **fields))

    async def wait_state(self, state: KioskState) -> None:
        await wait_for_status(self.kiosk.board, lambda status: status.state is state)


@asynccontextmanager
async def running_kiosk(
    config: Config,
    *,
    audio: AudioEngine | None = None,
    pin_factory: Any = None,
    setup: Callable[[Kiosk], object] | None = None,
) -> AsyncIterator[RunningKiosk]:
    """Run a kiosk until the block ends; its log lines (as journald would get them) are captured.

    ``audio`` and ``pin_factory`` replace the real engine and GPIO; ``setup`` sees the kiosk
    before it starts.
    """
    log = io.StringIO()
    setup_logging(config.log.level, stream=log)
    kiosk = Kiosk(config, audio=audio, pin_factory=pin_factory)
    if setup is not None:
        setup(kiosk)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(kiosk.run)
            yield RunningKiosk(kiosk, config.control.socket, log)
            nursery.cancel_scope.cancel()
    finally:
        await kiosk.aclose()
        logging.getLogger().handlers.clear()

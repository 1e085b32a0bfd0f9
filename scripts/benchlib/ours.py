"""Running kioskd's ``Kiosk`` in-process on simulated devices against the simulator."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from kioskd.audio.engine import AudioEngine
from kioskd.config import Config, parse_config
from kioskd.service.daemon import Kiosk
from kioskd.simulator import Simulator

from .common import Devices

log = logging.getLogger("bench")


def kiosk_config(sim: Simulator, tmp: Path, *, ws_base: str | None = None, **sections: dict[str, Any]) -> Config:
    """A kiosk on bench devices; signed URLs from the simulator's backend (or the public URL via ``ws_base``)."""
    token = tmp / "token"
    token.write_text(sim.config.kiosk_token)
    data: dict[str, Any] = {
        "kiosk": {"id": "bench-kiosk", "location": "bench"},
        "agent": {"agent_id": sim.config.agent_id},
        "backend": {"url": sim.backend_url, "token_file": str(token)},
        "audio": {"input": "bench-mic", "output": "bench-speaker", "input_rate": 16000, "output_rate": 16000,
                  "echo": "off"},
        "trigger": {"mode": "manual"},
        "control": {"socket": str(tmp / "control.sock")},
        "log": {"level": "warning"},
    }
    if ws_base is not None:
        del data["backend"]
        data["agent"]["server"] = ws_base
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data)


@asynccontextmanager
async def running_kiosk(config: Config, devices: Devices) -> AsyncIterator[Kiosk]:
    """Run a Kiosk whose audio engine opens ``devices`` until the block ends."""
    kiosk = Kiosk(config, audio=AudioEngine(config.audio, opener=devices))
    async with trio.open_nursery() as nursery:
        await nursery.start(kiosk.run)
        try:
            yield kiosk
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def tmpdir() -> AsyncIterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kioskd-bench-") as d:
        yield Path(d)


class TimedList(list):  # type: ignore[type-arg]
    """A list that remembers when (trio time) each item was appended."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.times: list[float] = []

    def append(self, item: Any) -> None:
        self.times.append(trio.current_time())
        super().append(item)


async def watch_interruptions(sim: Simulator, index: int) -> TimedList:
    """Timestamp the ``interruption`` events the simulator sends in conversation ``index``."""
    conv = await sim.wait_for_conversation(index)
    timed = TimedList(conv.interruptions)
    conv.interruptions = timed
    return timed

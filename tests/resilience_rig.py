"""A supervisor with fake audio against the simulator, its agent link (and optionally its
backend) behind FaultProxies; shared by the resilience and soak tests."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from board_wait import wait_for_status
from kiosk_harness import SPEECH_WAV, kiosk_config, read_wav
from kioskd.audio.formats import AudioFormat
from kioskd.backend.client import SignedUrlProvider
from kioskd.service.supervisor import Supervisor
from kioskd.simulator import Simulator, SimulatorConfig, open_simulator
from kioskd.simulator.proxy import FaultProxy
from kioskd.state import KioskState, StatusBoard
from kioskd.tools import ToolRegistry

CHUNK = 0.1  # seconds of microphone audio per message (long: virtual time runs faster)


class FakeUplink:
    """Microphone: the visitor's speech once (if ``speak``), then silence, paced in trio time."""

    def __init__(self, speak: bool) -> None:
        speech, _ = read_wav(SPEECH_WAV)
        self._pcm = speech.tobytes() if speak else b""
        self.closed = False

    speech_at: float | None = None  # the kiosk's VAD never hears this fake: no local activity
    voice_level = 0.0

    def set_format(self, fmt: AudioFormat) -> None:
        assert fmt.name == "pcm_16000"

    async def receive(self) -> bytes:
        await trio.sleep(CHUNK)
        size = int(16000 * CHUNK) * 2
        chunk, self._pcm = self._pcm[:size], self._pcm[size:]
        return chunk.ljust(size, b"\0")

    def close(self) -> None:
        self.closed = True


class FakePlayback:
    """Speaker that plays instantly."""

    speaking = False

    def push(self, event_id: int, data: bytes) -> None: ...
    def interrupt(self, event_id: int) -> None: ...
    def close(self) -> None: ...


@dataclass
class FakeAudio:
    """What the supervisor needs of the audio engine; records cues."""

    mic_enabled: bool = True
    speak_on_every_uplink: bool = False
    uplinks: list[FakeUplink] = field(default_factory=list)
    cues: list[tuple[float, str]] = field(default_factory=list)

    def open_uplink(self) -> FakeUplink:
        uplink = FakeUplink(speak=self.speak_on_every_uplink or not self.uplinks)
        self.uplinks.append(uplink)
        return uplink

    def open_playback(self, fmt: AudioFormat) -> FakePlayback:
        return FakePlayback()

    def play_cue(self, name: str) -> float:
        self.cues.append((trio.current_time(), name))
        return 0.0


@dataclass
class Rig:
    sim: Simulator
    agent_proxy: FaultProxy
    backend_proxy: FaultProxy
    supervisor: Supervisor
    urls: SignedUrlProvider
    board: StatusBoard
    audio: FakeAudio
    states: list[tuple[float, KioskState, str]]

    async def wait_state(self, state: KioskState) -> float:
        """Trio time at which the board (first) shows ``state`` from now on."""
        return await wait_for_status(self.board, lambda status: status.state is state)

    def network(self, *, stalled: bool, blackhole: bool = True) -> None:
        """Stall (or restore) both links: agent and backend."""
        for proxy in (self.agent_proxy, self.backend_proxy):
            proxy.blackhole = blackhole
            proxy.stall = stalled


@asynccontextmanager
async def open_rig(
    tmp_path: Path, sim_config: SimulatorConfig | None = None, **sections: dict[str, Any]
) -> AsyncIterator[Rig]:
    """Simulator, two proxies, provider and supervisor, running until the block ends."""
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(open_simulator(sim_config or SimulatorConfig()))
        agent_proxy = await stack.enter_async_context(FaultProxy("127.0.0.1", sim.agent.port))
        backend_port = int(sim.api_base.rsplit(":", 1)[1])
        backend_proxy = await stack.enter_async_context(FaultProxy("127.0.0.1", backend_port))
        # the backend mints URLs that lead through the agent proxy
        sim.backend.ws_base = lambda: f"ws://127.0.0.1:{agent_proxy.port}"
        backend = {"url": f"http://127.0.0.1:{backend_proxy.port}/signed-url", **sections.pop("backend", {})}
        config = kiosk_config(sim, tmp_path, backend=backend, **sections)
        board = StatusBoard()
        states: list[tuple[float, KioskState, str]] = []
        board.listen(lambda s: states.append((trio.current_time(), s.state, s.reason)))
        audio = FakeAudio()
        assert config.backend is not None
        urls = SignedUrlProvider(config.backend, config.network, config.agent.agent_id, config.backend.kiosk_token())
        stack.push_async_callback(urls.aclose)
        supervisor = Supervisor(config, audio, board, urls, ToolRegistry.from_config(config), rng=random.Random(0))
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        await nursery.start(urls.run)
        await nursery.start(supervisor.run)
        yield Rig(sim, agent_proxy, backend_proxy, supervisor, urls, board, audio, states)

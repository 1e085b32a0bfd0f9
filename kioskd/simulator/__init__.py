"""A local stand-in for the ElevenLabs agent and the kiosk's signing backend, with fault switches.

```python
async with open_simulator(SimulatorConfig(input_format="ulaw_8000")) as sim:
    url = sim.signed_url()                     # or GET sim.backend_url with the kiosk token
    ...                                        # talk to it
    await sim.wait_for(lambda: sim.conversations and sim.conversations[0].turns)
    sim.faults.drop()                          # Wi-Fi gone
```

The TCP fault proxy lives in :mod:`kioskd.simulator.proxy`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from kioskd.simulator.agent import CONVERSATION_PATH, AgentServer
from kioskd.simulator.backend import BackendRequest, SignedUrlBackend
from kioskd.simulator.faults import AgentFaults, BackendFaults
from kioskd.simulator.records import Conversation, PongRecord, TurnRecord
from kioskd.simulator.settings import SimulatorConfig
from kioskd.simulator.tokens import TokenStore

__all__ = [
    "AgentFaults",
    "BackendFaults",
    "BackendRequest",
    "Conversation",
    "PongRecord",
    "Simulator",
    "SimulatorConfig",
    "TurnRecord",
    "open_simulator",
]

log = logging.getLogger(__name__)


@dataclass
class Simulator:
    """A running simulator: where it listens, what it recorded, and its fault switches."""

    config: SimulatorConfig
    agent: AgentServer
    backend: SignedUrlBackend
    api_base: str

    @property
    def ws_base(self) -> str:
        """``ws://127.0.0.1:PORT``: the agent server (a kiosk's ``agent.server``)."""
        return f"ws://{self.config.host}:{self.agent.port}"

    @property
    def backend_url(self) -> str:
        """The kiosk signing endpoint, ``http://127.0.0.1:PORT/signed-url``."""
        return f"{self.api_base}/signed-url"

    @property
    def conversations(self) -> list[Conversation]:
        """Every conversation started so far, oldest first."""
        return self.agent.conversations

    @property
    def rejected(self) -> list[tuple[float, str]]:
        """Connections refused (bad path, agent or token): (time, reason)."""
        return self.agent.rejected

    @property
    def faults(self) -> AgentFaults:
        """Switches on the agent's WebSocket side."""
        return self.agent.faults

    @property
    def backend_faults(self) -> BackendFaults:
        """Switches on the kiosk signing endpoint."""
        return self.backend.kiosk_faults

    @property
    def upstream_faults(self) -> BackendFaults:
        """Switches on the ElevenLabs ``get_signed_url`` endpoint."""
        return self.backend.upstream_faults

    @property
    def backend_requests(self) -> list[BackendRequest]:
        """Every HTTP request answered, oldest first."""
        return self.backend.requests

    def signed_url(self, agent_id: str | None = None) -> str:
        """A fresh signed URL, as the backend would hand out."""
        return self.backend.signed_url(agent_id or self.config.agent_id)

    def public_url(self, agent_id: str | None = None) -> str:
        """The conversation URL without a token (accepted when ``require_token`` is False)."""
        return f"{self.ws_base}{CONVERSATION_PATH}?agent_id={agent_id or self.config.agent_id}"

    async def wait_for(self, predicate: Callable[[], object]) -> None:
        """Return once ``predicate()`` is truthy; re-checked on every recorded change. Bound it with trio.fail_after."""
        await self.agent.changes.wait_for(predicate)

    async def wait_for_conversation(self, index: int = 0) -> Conversation:
        """The ``index``-th conversation, once it has started."""
        await self.wait_for(lambda: len(self.conversations) > index)
        return self.conversations[index]


@asynccontextmanager
async def open_simulator(config: SimulatorConfig | None = None) -> AsyncIterator[Simulator]:
    """Run the agent and the backend on ``config.host`` (ports 0 = any free port) until exit."""
    from kioskd.simulator.records import ChangeSignal

    config = config or SimulatorConfig()
    tokens = TokenStore(config.token_ttl)
    changes = ChangeSignal()
    agent = AgentServer(config, tokens, AgentFaults(), changes)
    backend = SignedUrlBackend(config, tokens, changes, ws_base=lambda: f"ws://{config.host}:{agent.port}")
    http = HypercornConfig()
    http.bind = [f"{config.host}:{config.backend_port}"]
    http.graceful_timeout = 0.5
    http.accesslog = None
    http.errorlog = logging.getLogger("kioskd.simulator.http")
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        binds = await nursery.start(serve, backend.app(), http)
        api_base = binds[0]
        sim = Simulator(config, agent, backend, api_base)
        try:
            yield sim
        finally:
            nursery.cancel_scope.cancel()

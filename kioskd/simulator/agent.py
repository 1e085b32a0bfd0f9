"""The simulated Conversational AI agent: a protocol-faithful WebSocket server on loopback.

One :class:`AgentServer` serves ``/v1/convai/conversation?agent_id=…&token=…``: it checks
the path, the agent id and the token, then runs each connection as one
:class:`~kioskd.simulator.session.AgentSession` (which says how a conversation behaves),
recorded in a :class:`~kioskd.simulator.records.Conversation`.
"""

from __future__ import annotations

import itertools
import logging
from functools import partial
from typing import Final
from urllib.parse import parse_qs, urlsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from kioskd import websocket_fix
from kioskd.simulator.faults import AgentFaults
from kioskd.simulator.records import ChangeSignal, Conversation
from kioskd.simulator.session import CLOSE_TIMEOUT, AgentSession
from kioskd.simulator.settings import SimulatorConfig
from kioskd.simulator.tokens import TokenStore

__all__ = ["CONVERSATION_PATH", "AgentServer"]

log = logging.getLogger(__name__)
websocket_fix.install()  # no pong after our own Close (trio-websocket #184)

CONVERSATION_PATH: Final = "/v1/convai/conversation"


class AgentServer:
    """Serves simulated conversations and keeps their records."""

    def __init__(
        self,
        config: SimulatorConfig,
        tokens: TokenStore,
        faults: AgentFaults,
        changes: ChangeSignal,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.faults = faults
        self.changes = changes
        self.conversations: list[Conversation] = []
        #: Connections refused: (time, reason).
        self.rejected: list[tuple[float, str]] = []
        self.port = 0
        self._ids = itertools.count(1)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``config.host:config.port`` until cancelled; reports the bound port."""
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    serve_websocket,
                    self._handle,
                    self.config.host,
                    self.config.port,
                    None,
                    max_message_size=self.config.max_message_size,
                    disconnect_timeout=CLOSE_TIMEOUT,
                )
            )
            self.port = server.port
            log.info("simulated agent listening port=%d", self.port)
            task_status.started(self.port)

    async def _handle(self, request: WebSocketRequest) -> None:
        """One connection; never lets an error escape into the server."""
        try:
            await self._serve(request)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("simulated agent: conversation handler failed")

    async def _serve(self, request: WebSocketRequest) -> None:
        url = urlsplit(request.path)
        if url.path.rstrip("/") != CONVERSATION_PATH:
            self._reject(f"unknown path {url.path}")
            await request.reject(404, body=b"not found")
            return
        query = parse_qs(url.query)
        agent_id = query.get("agent_id", [""])[0]
        token = query.get("token", [None])[0]
        ws = await request.accept()
        problem = self._authorise(agent_id, token)
        if problem is not None:
            self._reject(problem)
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose(1008, problem)
            return
        record = Conversation(
            conversation_id=f"conv_sim_{next(self._ids)}",
            agent_id=agent_id,
            input_format=self.config.input_format,
            output_format=self.config.output_format,
            started_at=trio.current_time(),
        )
        self.conversations.append(record)
        self.changes.notify()
        session = AgentSession(ws, record, self.config, self.faults, self.changes)
        self.faults._targets.add(session)
        try:
            await session.run()
        finally:
            self.faults._targets.discard(session)
            record.finish(trio.current_time(), None, "connection lost")
            self.changes.notify()

    def _authorise(self, agent_id: str, token: str | None) -> str | None:
        if agent_id not in self.config.agent_ids:
            return "unknown agent"
        if token is None:
            return "missing token" if self.config.require_token else None
        return self.tokens.check(token, agent_id, trio.current_time())

    def _reject(self, reason: str) -> None:
        log.info("simulated agent: refused connection reason=%s", reason)
        self.rejected.append((trio.current_time(), reason))
        self.changes.notify()

"""The simulated signing backends, as one Starlette app.

* kiosk contract: ``GET /signed-url?agent_id=ID`` with ``Authorization: Bearer TOKEN``;
* ElevenLabs contract: ``GET /v1/convai/conversation/get_signed_url?agent_id=ID`` (also
  ``get-signed-url``) with ``xi-api-key: KEY``, to test the reference signing backend.

Each endpoint has its own :class:`~kioskd.simulator.faults.BackendFaults`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from kioskd.simulator.agent import CONVERSATION_PATH
from kioskd.simulator.faults import BackendFaults
from kioskd.simulator.records import ChangeSignal
from kioskd.simulator.settings import SimulatorConfig
from kioskd.simulator.tokens import TokenStore

__all__ = ["KIOSK_PATH", "UPSTREAM_PATHS", "BackendRequest", "SignedUrlBackend"]

KIOSK_PATH: Final = "/signed-url"
UPSTREAM_PATHS: Final = ("/v1/convai/conversation/get_signed_url", "/v1/convai/conversation/get-signed-url")


@dataclass(frozen=True)
class BackendRequest:
    """One request the backend answered (``endpoint`` is "kiosk" or "upstream")."""

    t: float
    endpoint: str
    agent_id: str | None
    status: int


@dataclass
class SignedUrlBackend:
    """Mints signed URLs for the simulated agent; the app is served by hypercorn."""

    config: SimulatorConfig
    tokens: TokenStore
    changes: ChangeSignal
    ws_base: Callable[[], str]
    kiosk_faults: BackendFaults = field(default_factory=BackendFaults)
    upstream_faults: BackendFaults = field(default_factory=BackendFaults)
    requests: list[BackendRequest] = field(default_factory=list)

    def app(self) -> Starlette:
        """The ASGI application."""
        routes = [Route(KIOSK_PATH, self._kiosk, methods=["GET"])]
        routes += [Route(path, self._upstream, methods=["GET"]) for path in UPSTREAM_PATHS]
        return Starlette(routes=routes)

    def signed_url(self, agent_id: str) -> str:
        """A fresh signed URL for ``agent_id``."""
        token = self.tokens.mint(agent_id, trio.current_time())
        return f"{self.ws_base()}{CONVERSATION_PATH}?{urlencode({'agent_id': agent_id, 'token': token})}"

    async def _kiosk(self, request: Request) -> Response:
        agent_id = request.query_params.get("agent_id")
        response = await self._faulted(self.kiosk_faults)
        if response is None:
            auth = request.headers.get("authorization", "")
            if auth != f"Bearer {self.config.kiosk_token}":
                response = JSONResponse({"error": "unauthorised"}, status_code=401)
            elif not agent_id:
                response = JSONResponse({"error": "agent_id is required"}, status_code=400)
            elif agent_id not in self.config.agent_ids:
                response = JSONResponse({"error": "agent not allowed"}, status_code=403)
            else:
                response = JSONResponse({"signed_url": self.signed_url(agent_id)})
        return self._log("kiosk", agent_id, response)

    async def _upstream(self, request: Request) -> Response:
        agent_id = request.query_params.get("agent_id")
        response = await self._faulted(self.upstream_faults)
        if response is None:
            if request.headers.get("xi-api-key") != self.config.api_key:
                detail = {"status": "invalid_api_key", "message": "Invalid API key"}
                response = JSONResponse({"detail": detail}, status_code=401)
            elif not agent_id or agent_id not in self.config.agent_ids:
                detail = {"status": "agent_not_found", "message": "Agent not found"}
                response = JSONResponse({"detail": detail}, status_code=404)
            else:
                response = JSONResponse({"signed_url": self.signed_url(agent_id)})
        return self._log("upstream", agent_id, response)

    async def _faulted(self, faults: BackendFaults) -> Response | None:
        """The fault response for this request, or None to answer normally."""
        if faults.delay > 0:
            await trio.sleep(faults.delay)
        mode = faults.take()
        if mode is None:
            return None
        if mode == "timeout":
            await trio.sleep_forever()
        if mode == "garbage":
            return PlainTextResponse("<html>502 Bad Gateway (simulated)</html>", status_code=200)
        if mode == "bad_json":
            return JSONResponse({"url": "nope"})
        status = int(mode)
        headers = {"Retry-After": str(faults.retry_after)} if status == 429 else None
        return JSONResponse({"error": f"simulated {status}"}, status_code=status, headers=headers)

    def _log(self, endpoint: str, agent_id: str | None, response: Response) -> Response:
        self.requests.append(BackendRequest(trio.current_time(), endpoint, agent_id, response.status_code))
        self.changes.notify()
        return response

"""The kiosk's heartbeat: its status POSTed to the backend every ``heartbeat_interval`` seconds.

``POST {heartbeat_url}`` with the kiosk token and a JSON object: the kiosk's status
(state, problems, devices, counters, last error, …) plus ``version``, ``uptime`` and
``heartbeat_interval`` (the backend marks the kiosk offline after three missed ones).
Each outcome goes to the :class:`~kioskd.backend.client.SignedUrlProvider`: an
answered heartbeat is the health check, so an idle kiosk stops minting signed URLs
just to learn the backend is up. A backend without ``/heartbeat`` (404/405) is noted
once and the kiosk goes back to health checks by signed URL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import trio

from kioskd import __version__
from kioskd.backend.client import SignedUrlError, parse_reply
from kioskd.backend.client_config import BackendConfig

__all__ = ["HeartbeatSender", "heartbeat_url"]

log = logging.getLogger(__name__)

#: Replies meaning "this backend has no heartbeat endpoint".
NOT_SERVED = (404, 405)


class HealthListener(Protocol):
    """Told every heartbeat's outcome (see :meth:`SignedUrlProvider.note_heartbeat`)."""

    def note_heartbeat(self, error: str | None) -> None:
        """``""`` answered, a message if it failed, None if the backend serves no heartbeats."""
        ...


def heartbeat_url(backend: BackendConfig) -> str:
    """``heartbeat_url``, or ``url`` with its last path segment replaced by ``heartbeat`` (no query)."""
    if backend.heartbeat_url:
        return backend.heartbeat_url
    parts = urlsplit(backend.url)
    head, _, _ = parts.path.rpartition("/")
    return urlunsplit((parts.scheme, parts.netloc, f"{head}/heartbeat", "", ""))


class HeartbeatSender:
    """POSTs ``status()`` every ``heartbeat_interval`` seconds; never raises, never logs the token."""

    def __init__(
        self,
        backend: BackendConfig,
        token: str,
        status: Callable[[], dict[str, Any]],
        listener: HealthListener,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._backend = backend
        self._url = heartbeat_url(backend)
        self._token = token
        self._status = status
        self._listener = listener
        self._client = client or httpx.AsyncClient(follow_redirects=False)
        self._started: float | None = None
        self.sent = 0

    def payload(self) -> dict[str, Any]:
        """What one heartbeat carries."""
        body = dict(self._status())
        body.update(
            version=__version__,
            uptime=round(trio.current_time() - self._started, 1) if self._started is not None else 0.0,
            heartbeat_interval=self._backend.heartbeat_interval,
        )
        return body

    async def send(self) -> str | None:
        """One heartbeat: ``""`` if answered, the failure, or None if the backend serves none."""
        self.sent += 1
        try:
            with trio.fail_after(self._backend.timeout):
                response = await self._client.post(
                    self._url,
                    json=self.payload(),
                    headers={"Authorization": f"Bearer {self._token}"},
                    timeout=self._backend.timeout,
                )
        except (httpx.TimeoutException, trio.TooSlowError):
            return f"timeout: no answer to the heartbeat within {self._backend.timeout:g} s"
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError, ValueError) as exc:
            return f"network: heartbeat failed: {type(exc).__name__}"
        if response.status_code in NOT_SERVED:
            return None
        if response.status_code != 200:
            try:
                parse_reply(response.status_code, b"", response.headers)  # raises for every status but 200
            except SignedUrlError as exc:
                return str(exc)
        return ""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send a heartbeat now and every interval; stops if the backend serves none. Off at interval 0."""
        self._started = trio.current_time()
        task_status.started()
        if self._backend.heartbeat_interval <= 0:
            return
        while True:
            outcome = await self.send()
            self._listener.note_heartbeat(outcome)
            if outcome is None:
                log.info("backend serves no heartbeats (HTTP 404/405); health checks fetch signed URLs")
                return
            if outcome:
                log.warning("heartbeat failed: %s", outcome)
            await trio.sleep(self._backend.heartbeat_interval)

    async def aclose(self) -> None:
        """Close the HTTP client's connections (at shutdown)."""
        await self._client.aclose()

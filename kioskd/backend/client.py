"""Where conversation URLs come from: the kiosk's signing backend, or a public agent's URL.

The kiosk never holds the ElevenLabs API key. With a ``[backend]`` it asks
``GET {url}?agent_id=ID`` with ``Authorization: Bearer <kiosk token>`` and gets
``{"signed_url": "wss://…"}``. Failures become :class:`SignedUrlError` values that
say what went wrong and how long to wait before asking again.

:class:`SignedUrlProvider` keeps one fresh signed URL ready while idle (prefetch), so a
button press needs no backend round trip, and its success or failure doubles as the
backend health check that drives the "offline" light. Once the backend answers the
kiosk's heartbeats (:mod:`kioskd.backend.heartbeat`), those answer the health question
instead: an idle kiosk then fetches a URL only to keep the prefetched one fresh.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import quote, urlsplit

import httpx
import msgspec
import trio

from kioskd.backend.client_config import BackendConfig
from kioskd.backoff import Backoff
from kioskd.config import NetworkConfig

__all__ = [
    "PublicAgentUrl",
    "SignedUrlError",
    "SignedUrlProvider",
    "UrlSource",
    "fetch_signed_url",
    "public_agent_url",
]

log = logging.getLogger(__name__)

#: How long to wait after the backend rejected this kiosk's token (401/403).
UNAUTHORIZED_RETRY = 60.0
#: Longest Retry-After honoured (a broken header must not park the kiosk for a day).
MAX_RETRY_AFTER = 600.0

#: Failures that retrying will not fix: the operator must change the token or the backend's config.
REJECTED_KINDS = ("unauthorized", "forbidden")

ErrorKind = Literal["unauthorized", "forbidden", "rate_limited", "server", "timeout", "network", "bad_reply"]


@dataclass(eq=False)
class SignedUrlError(Exception):
    """The backend did not give a usable signed URL."""

    kind: ErrorKind
    detail: str
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"

    def wait(self, backoff: Backoff) -> float:
        """Seconds to wait before the next try: Retry-After, a slow pace for auth errors, else backoff."""
        if self.retry_after is not None:
            return self.retry_after
        if self.kind in ("unauthorized", "forbidden"):
            return UNAUTHORIZED_RETRY
        return backoff.next_delay()


class _SignedUrlReply(msgspec.Struct):
    signed_url: str


_reply_decoder = msgspec.json.Decoder(_SignedUrlReply)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: fall back to backoff rather than parse calendars here
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


def parse_reply(status: int, body: bytes, headers: httpx.Headers | dict[str, str]) -> str:
    """Interpret one backend reply (pure). Returns the signed URL or raises SignedUrlError."""
    if status == 401:
        raise SignedUrlError("unauthorized", "the backend rejected this kiosk's token (HTTP 401)")
    if status == 403:
        raise SignedUrlError("forbidden", "the backend does not allow this kiosk to use this agent (HTTP 403)")
    if status == 429:
        retry = _retry_after(headers.get("retry-after"))
        raise SignedUrlError("rate_limited", "the backend is rate-limiting this kiosk (HTTP 429)", retry)
    if status >= 500:
        raise SignedUrlError("server", f"the backend failed (HTTP {status})", _retry_after(headers.get("retry-after")))
    if status != 200:
        raise SignedUrlError("bad_reply", f"unexpected HTTP {status} from the backend")
    try:
        url = _reply_decoder.decode(body).signed_url
    except msgspec.DecodeError as exc:
        raise SignedUrlError("bad_reply", f"the backend's reply is not {{\"signed_url\": ...}}: {exc}") from None
    _check_url(url)
    return url


def _check_url(url: str) -> None:
    """Refuse a signed URL the WebSocket client could not use (named without echoing it: it holds a token)."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise SignedUrlError("bad_reply", "the backend's signed_url contains spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise SignedUrlError("bad_reply", "the backend's signed_url cannot be parsed") from None
    if parts.scheme not in ("wss", "ws"):
        raise SignedUrlError("bad_reply", "the backend's signed_url is not a ws:// or wss:// URL")
    if not parts.hostname:
        raise SignedUrlError("bad_reply", "the backend's signed_url has no host")


async def fetch_signed_url(
    client: httpx.AsyncClient, backend: BackendConfig, agent_id: str, token: str, *, timeout: float | None = None
) -> str:
    """One request to the kiosk's backend (``timeout`` defaults to ``backend.timeout``).

    Raises only :class:`SignedUrlError`.
    """
    limit = backend.timeout if timeout is None else timeout
    try:
        with trio.fail_after(limit):  # one bound for the whole exchange, not per socket operation
            response = await client.get(
                backend.url,
                params={"agent_id": agent_id},
                headers={"Authorization": f"Bearer {token}"},
                timeout=limit,
            )
    except (httpx.TimeoutException, trio.TooSlowError):
        raise SignedUrlError("timeout", f"no answer from the backend within {limit:g} s") from None
    except httpx.LocalProtocolError:
        # its text quotes the offending header, i.e. the token: never pass it on
        raise SignedUrlError(
            "network", "the request could not be sent: a header is not valid (check the kiosk token)"
        ) from None
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError, ValueError) as exc:
        raise SignedUrlError("network", f"cannot reach the backend: {_describe_failure(exc)}") from None
    return parse_reply(response.status_code, response.content, response.headers)


#: Failures whose text names only the transport (refused, reset, unreachable), never our request.
_PLAIN_FAILURES = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.CloseError, OSError)


def _describe_failure(exc: BaseException) -> str:
    """The failure's type, and its text only where that cannot hold a header or URL we sent."""
    if isinstance(exc, _PLAIN_FAILURES):
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return type(exc).__name__


def public_agent_url(server: str, agent_id: str) -> str:
    """The WebSocket URL of a public agent (no backend, no token)."""
    return f"{server.rstrip('/')}/v1/convai/conversation?agent_id={quote(agent_id)}"


class UrlSource(Protocol):
    """Gives the URL for the next conversation."""

    @property
    def healthy(self) -> bool:
        """The backend answered the last check."""
        ...

    @property
    def last_error(self) -> str:
        """Why it is unhealthy ("" when healthy)."""
        ...

    @property
    def last_error_kind(self) -> str:
        """The latest failure's :data:`ErrorKind` ("" while healthy)."""
        ...

    async def take(self, *, timeout: float | None = None) -> str:
        """A URL for one new conversation (a fetch bounded by ``timeout``). Raises SignedUrlError."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background upkeep (prefetch, health checks); returns never."""
        ...

    async def aclose(self) -> None:
        """Release connections (at shutdown)."""
        ...


class PublicAgentUrl:
    """A public agent: the same URL every time, nothing to prefetch."""

    healthy = True
    last_error = ""
    last_error_kind = ""

    def __init__(self, server: str, agent_id: str) -> None:
        self._url = public_agent_url(server, agent_id)

    async def take(self, *, timeout: float | None = None) -> str:
        """The public agent's URL."""
        return self._url

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def aclose(self) -> None:
        """Nothing to release."""


class SignedUrlProvider:
    """Signed URLs from the backend, one per conversation, with one kept ready while idle.

    A prefetched URL is used for at most one conversation and only while younger
    than ``backend.url_max_age`` (a signed URL is valid 15 minutes to *start* a
    conversation). :meth:`run` refreshes it and, when prefetch is off, still checks
    the backend every ``health_interval`` seconds so the offline light tells the truth.
    """

    def __init__(
        self,
        backend: BackendConfig,
        network: NetworkConfig,
        agent_id: str,
        token: str,
        *,
        client: httpx.AsyncClient | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._backend = backend
        self._agent_id = agent_id
        self._token = token
        self._client = client or httpx.AsyncClient(follow_redirects=False)
        self._backoff = backoff or Backoff(network.backoff_base, network.backoff_cap)
        self._ready: tuple[str, float] | None = None  # (url, fetched_at)
        self._wanted = trio.Event()
        self._fetch_error = ""  # the last fetch's failure, "" after a success
        self._fetch_error_kind = ""  # its ErrorKind
        self._heartbeat_error = ""  # the last heartbeat's failure, "" after an answered one
        #: True while the backend answers heartbeats: health checks need no signed URL then.
        self.heartbeats = False
        self.fetches = 0

    @property
    def healthy(self) -> bool:
        """The last fetch and (with heartbeats) the last heartbeat both succeeded."""
        return not self._fetch_error and not self._heartbeat_error

    @property
    def last_error(self) -> str:
        """Why the backend counts as unhealthy ("" when healthy)."""
        return self._fetch_error or self._heartbeat_error

    @property
    def last_error_kind(self) -> str:
        """The :data:`ErrorKind` of :attr:`last_error` (a failed heartbeat counts as ``network``)."""
        if self._fetch_error:
            return self._fetch_error_kind
        return "network" if self._heartbeat_error else ""

    def note_heartbeat(self, error: str | None) -> None:
        """A heartbeat's outcome: ``""`` answered, a message if it failed, None if the backend has no heartbeats.

        An answered heartbeat switches health checks to heartbeats; None switches back to fetches.
        """
        was = self.heartbeats
        self.heartbeats = error is not None
        self._heartbeat_error = error or ""
        if was != self.heartbeats:
            self._wanted.set()  # re-plan the next fetch

    @property
    def token(self) -> str:
        """The kiosk token in use (compare only; never log it)."""
        return self._token

    def set_token(self, token: str) -> None:
        """Use a new kiosk token (after a config reload); drops any prefetched URL."""
        self._token = token
        self._ready = None
        self._wanted.set()

    async def _fetch(self, timeout: float | None = None) -> str:
        self.fetches += 1
        try:
            url = await fetch_signed_url(self._client, self._backend, self._agent_id, self._token, timeout=timeout)
        except SignedUrlError as exc:
            self._fetch_error = str(exc)
            self._fetch_error_kind = exc.kind
            if self.heartbeats:
                self._wanted.set()  # no health fetches are planned: retry soon to learn when it is back
            raise
        self._fetch_error = ""
        self._fetch_error_kind = ""
        self._backoff.reset()
        return url

    def _fresh(self) -> str | None:
        if self._ready is None:
            return None
        url, fetched_at = self._ready
        if trio.current_time() - fetched_at >= self._backend.url_max_age:
            self._ready = None
            return None
        return url

    async def take(self, *, timeout: float | None = None) -> str:
        """A signed URL for one conversation: the prefetched one if fresh, else a new fetch.

        ``timeout`` bounds that fetch (default ``backend.timeout``).
        """
        url = self._fresh()
        self._ready = None
        if self._backend.prefetch:
            self._wanted.set()  # refill in the background (without prefetch there is nothing to refill)
        if url is not None:
            return url
        return await self._fetch(timeout)

    def _next_check(self) -> float:
        """Seconds until the next planned fetch: the health interval (none with heartbeats), or when the URL expires."""
        wait = math.inf if self.heartbeats else self._backend.health_interval
        if self._ready is not None:
            wait = min(wait, self._ready[1] + self._backend.url_max_age - trio.current_time())
        return wait

    def _needs_fetch(self) -> bool:
        """With heartbeats, fetch only to refill the prefetched URL or to retry a failed fetch."""
        if not self.heartbeats:
            return True  # the fetch is the health check
        return bool(self._fetch_error) or (self._backend.prefetch and self._fresh() is None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep one URL ready and check the backend every ``health_interval``; never returns.

        The health check is a real fetch (the only honest test of DNS, TLS, the backend
        and its upstream): with prefetch its URL replaces the ready one, so the ready URL
        is never older than ``health_interval``. A failed check keeps a still-valid URL (a
        visitor can still start at once when the network is back) but turns the light
        to offline, and retries with backoff, or after Retry-After, instead of waiting a
        whole interval. While the backend answers heartbeats there are no health fetches:
        a URL is fetched only when the prefetched one is used or would expire.
        """
        task_status.started()
        while True:
            if not self._needs_fetch():
                wait = self._next_check()
            else:
                try:
                    url = await self._fetch()
                except SignedUrlError as exc:
                    wait = exc.wait(self._backoff)
                    what = "backend refuses this kiosk" if exc.kind in REJECTED_KINDS else "backend unavailable"
                    log.warning("%s, next check in %.1f s: %s", what, wait, exc.detail)
                    self._fresh()  # drop an expired one
                else:
                    if self._backend.prefetch:
                        self._ready = (url, trio.current_time())
                        log.debug("signed URL prefetched")
                    wait = self._next_check()
            self._wanted = trio.Event()
            if self._ready is not None:
                wait = min(wait, self._next_check())
            with trio.move_on_after(max(wait, 0.0)):
                await self._wanted.wait()

    async def aclose(self) -> None:
        """Close the HTTP client's connections (at shutdown)."""
        await self._client.aclose()

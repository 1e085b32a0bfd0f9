"""``kioskd backend``: the reference signing backend (it holds the ElevenLabs API key).

``GET /signed-url?agent_id=ID`` with ``Authorization: Bearer <kiosk token>``:

- 401 unknown or missing token (SHA-256 compared in constant time with each kiosk's)
- 400 ``agent_id`` missing, repeated or not 1-64 of ``[A-Za-z0-9_-]``; 403 agent not in
  that kiosk's ``agents``
- 429 over the kiosk's token bucket (charged only for URLs actually issued), over the
  client address's budget of requests without a valid token (refused before any other
  work, logged once per spell), or passed on from the API's own 429; ``Retry-After`` in
  whole seconds
- 502 the ElevenLabs API failed (down, slow, non-200, too large, bad JSON, a signed URL
  that is not ``wss://`` on the API's own host), JSON body, no secrets
- 200 ``{"signed_url": "wss://…"}``

Every client-supplied value is logged through :func:`kioskd.ops.logs.untrusted` (quoted,
escaped, cut short).

- 503 the shared state (Redis) is unreachable, with ``Retry-After``: fail closed

``GET /healthz`` → ``{"ok": true}``. Served by :mod:`kioskd.backend.httpserver` (h11 on Trio). The state
(buckets, heartbeats, registry, revocations) is a :class:`~kioskd.backend.store.Store`:
in this process, or in Redis with ``redis_url`` (the unauthenticated-request throttle
stays per replica). Heartbeats and the fleet view are in :mod:`kioskd.backend.fleet`,
``/metrics`` in :mod:`kioskd.backend.metrics`.
``kioskd backend hash-token`` prints a new kiosk token and the hash for backend.toml;
``kioskd backend kiosks add|revoke|list`` manages the registry (:mod:`kioskd.backend.kiosks`).
"""

from __future__ import annotations

import argparse
import dataclasses
import email.utils
import hashlib
import json
import logging
import math
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import h11
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kioskd.backend import fleet, httpserver, metrics
from kioskd.backend.server_config import (
    MAX_THROTTLED_ADDRESSES,
    AddressThrottle,
    BackendServerConfig,
    KioskEntry,
    TokenBucket,
    is_loopback,
    load_server_config_for,
    parse_listen,
)
from kioskd.backend.store import Store, StoreUnavailable, open_store
from kioskd.backend.upstream import TooLarge, UpstreamPool
from kioskd.ops import logs

__all__ = ["API_KEY_ENV", "build_app", "hash_token", "main", "serve", "signed_url_problem", "upstream_retry_after"]

log = logging.getLogger(__name__)
T = TypeVar("T")

API_KEY_ENV = "ELEVENLABS_API_KEY"
#: The signed-URL endpoint as the current API (and the Python SDK) spells it, then the seed's
#: older spelling, asked only when the first answers 404 (NOTES: "get-signed-url").
SIGNED_URL_PATHS = ("/v1/convai/conversation/get-signed-url", "/v1/convai/conversation/get_signed_url")
TOKEN_BYTES = 32
EXIT_USAGE = 2
#: Upstream replies larger than this are not JSON we want.
MAX_UPSTREAM_BODY = 64 * 1024
#: A valid ``agent_id``; anything else is answered 400 before any other work.
AGENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: A signed URL: printable ASCII, no spaces.
_URL_CHARS = re.compile(r"[\x21-\x7e]+")
#: The API's 429 is passed on with its Retry-After, at most this many seconds...
MAX_RETRY_AFTER = 600
#: ...or this many when it gave none we can read.
DEFAULT_UPSTREAM_RETRY_AFTER = 10
#: Requests in progress at a graceful stop get this long.
SHUTDOWN_TIMEOUT = 5.0


def hash_token(token: str) -> str:
    """The SHA-256 hex digest of a kiosk token, as written in ``token_sha256``."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_digest(authorization: str | None) -> str | None:
    """The SHA-256 of the token in ``Authorization: Bearer …``, or None without one."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return hash_token(token.strip())


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


class UpstreamError(Exception):
    """The ElevenLabs API did not give a signed URL; the message is safe to return and log.

    ``retry_after`` is set when the API itself rate-limited us (passed on as 429).
    """

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def upstream_retry_after(value: str | None) -> int:
    """The API's ``Retry-After`` (seconds or an HTTP date) as whole seconds in [1, MAX_RETRY_AFTER]."""
    seconds: float = DEFAULT_UPSTREAM_RETRY_AFTER
    if value is not None and value.strip().isdigit():
        seconds = int(value.strip())
    elif value is not None:
        try:
            seconds = (email.utils.parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            pass
    return int(min(MAX_RETRY_AFTER, max(1, math.ceil(seconds))))


def signed_url_problem(signed: object, api_base: str) -> str | None:
    """None if ``signed`` may be handed to a kiosk, else why not (never echoing it: it holds a token).

    Only ``wss://`` on the API's own host (plain ``ws://`` only when the API is on loopback,
    e.g. the simulator), printable ASCII without spaces, no user info.
    """
    if not isinstance(signed, str):
        return "the API's reply has no wss:// signed_url"
    if not _URL_CHARS.fullmatch(signed):
        return "the API's signed_url contains spaces, control or non-ASCII characters"
    upstream = urlsplit(api_base).hostname
    try:
        parts = urlsplit(signed)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "the API's signed_url cannot be parsed"
    if not (parts.scheme == "wss" or (parts.scheme == "ws" and is_loopback(upstream))):
        return "the API's reply has no wss:// signed_url"
    if parts.username is not None or parts.password is not None:
        return "the API's signed_url carries user info"
    if host is None or host != upstream:
        return "the API's signed_url points at another host than api_base"
    return None


class Signer:
    """Authorises kiosks, rate-limits them and asks ElevenLabs for signed URLs."""

    def __init__(
        self,
        config: BackendServerConfig,
        api_key: str,
        upstream: UpstreamPool,
        store: Store,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        self._api_key = api_key
        self._upstream = upstream
        self._clock = clock
        self._throttle = AddressThrottle(config.unauthenticated_rate_per_minute, config.unauthenticated_burst)
        #: addresses whose current throttle spell was logged (one line per spell, not per request)
        self._throttle_logged: set[str] = set()

    async def authenticate(self, authorization: str | None) -> KioskEntry | None:
        """The kiosk whose token is in ``Authorization: Bearer …``, or None (unknown or revoked)."""
        digest = bearer_digest(authorization)
        return await self.store.kiosk_for_token(digest) if digest is not None else None

    async def fetch(self, agent_id: str) -> str:
        """A signed URL from the ElevenLabs API, within ``upstream_timeout``. Raises UpstreamError."""
        headers = [("xi-api-key", self._api_key), ("Accept-Encoding", "identity")]
        query = "?" + urlencode({"agent_id": agent_id})
        try:
            with trio.fail_after(self.config.upstream_timeout):
                for path in SIGNED_URL_PATHS:  # the next spelling only after a 404
                    reply = await self._upstream.get(path + query, headers, MAX_UPSTREAM_BODY)
                    if reply.status == 404 and path != SIGNED_URL_PATHS[-1]:
                        continue
                    if reply.status == 429:
                        retry = upstream_retry_after(reply.headers.get("retry-after"))
                        raise UpstreamError("the API is rate-limiting this backend (HTTP 429)", retry_after=retry)
                    if reply.status != 200:
                        raise UpstreamError(f"the API answered {reply.status}")
                    if reply.headers.get("content-encoding", "identity").lower() != "identity":
                        raise UpstreamError("the API's reply is compressed although we asked for identity")
                    content = reply.body
                    break
        except trio.TooSlowError:
            raise UpstreamError(f"no answer within {self.config.upstream_timeout:g} s") from None
        except TooLarge:
            raise UpstreamError("the API's reply is too large") from None
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            raise UpstreamError(f"cannot reach the API ({type(exc).__name__})") from None
        try:
            body: Any = json.loads(content)
        except ValueError:
            raise UpstreamError("the API's reply is not JSON") from None
        signed = body.get("signed_url") if isinstance(body, dict) else None
        problem = signed_url_problem(signed, self.config.api_base)
        if problem is not None:
            raise UpstreamError(problem)
        assert isinstance(signed, str)
        return signed

    async def signed_url(self, request: Request) -> JSONResponse:
        """``GET /signed-url``: the whole decision, logged without secrets, client values escaped."""
        started = time.monotonic()
        address = request.client.host if request.client else "-"
        now = self._clock()
        wait = self._throttle.wait(address, now)
        if wait > 0:
            return self._throttled(address, wait)
        self._throttle_logged.discard(address)
        authorization = request.headers.get("authorization")
        agent_ids = request.query_params.getlist("agent_id")
        kiosk: KioskEntry | None
        if len(agent_ids) != 1 or not AGENT_ID.fullmatch(agent_ids[0]):
            kiosk = await self.authenticate(authorization)  # logged, and not charged to the address if known
            response = _error(400, "bad_request", "agent_id must be given once: 1-64 of A-Z a-z 0-9 _ -")
        else:
            kiosk, response = await self._decide(bearer_digest(authorization), agent_ids[0])
        if kiosk is None:
            self._throttle.charge(address, now)
        log.info(
            "signed url request kiosk=%s agent=%s status=%d latency_ms=%.0f client=%s",
            kiosk.id if kiosk else "-",
            logs.untrusted(",".join(agent_ids)) if agent_ids else "-",
            response.status_code,
            (time.monotonic() - started) * 1000,
            logs.untrusted(address),
        )
        return response

    def _throttled(self, address: str, wait: float) -> JSONResponse:
        retry_after = TokenBucket.retry_after(wait)
        if address not in self._throttle_logged:
            if len(self._throttle_logged) >= MAX_THROTTLED_ADDRESSES:
                self._throttle_logged.clear()
            self._throttle_logged.add(address)
            log.warning(
                "client throttled: too many requests without a valid token client=%s retry_after=%d",
                logs.untrusted(address),
                retry_after,
            )
        return _error(
            429, "rate_limited", f"too many requests without a valid token; retry in {retry_after} s",
            {"Retry-After": str(retry_after)},
        )

    async def admit(self, request: Request, authorize: Callable[[str], Awaitable[T | None]]) -> T | JSONResponse:
        """``authorize(token sha256)``'s answer, or the refusal: 429 while the address is throttled,
        401 (charged to the address) without a valid token or when ``authorize`` gives None.

        For the endpoints besides ``/signed-url`` (heartbeats), under the same throttle.
        """
        address = request.client.host if request.client else "-"
        now = self._clock()
        wait = self._throttle.wait(address, now)
        if wait > 0:
            return self._throttled(address, wait)
        digest = bearer_digest(request.headers.get("authorization"))
        found = await authorize(digest) if digest is not None else None
        if found is None:
            self._throttle.charge(address, now)
            return _error(401, "unauthorized", "missing or unknown kiosk token", {"WWW-Authenticate": "Bearer"})
        return found

    async def _decide(self, digest: str | None, agent_id: str) -> tuple[KioskEntry | None, JSONResponse]:
        """Admission (look-up, agent, charge: one store step), then the upstream call."""
        admission = await self.store.admit_signed_url(digest, agent_id) if digest is not None else None
        if admission is None:
            return None, _error(401, "unauthorized", "missing or unknown kiosk token", {"WWW-Authenticate": "Bearer"})
        kiosk = admission.kiosk
        if not admission.allowed:
            return kiosk, _error(403, "forbidden", "this kiosk may not use that agent")
        if admission.wait > 0:
            retry_after = TokenBucket.retry_after(admission.wait)
            return kiosk, _error(429, "rate_limited", f"retry in {retry_after} s", {"Retry-After": str(retry_after)})
        try:
            signed = await self.fetch(agent_id)
        except UpstreamError as exc:
            await self.store.refund(kiosk.id)  # only URLs actually issued count against the kiosk
            log.warning("upstream failed kiosk=%s agent=%s error=%r", kiosk.id, agent_id, str(exc))
            if exc.retry_after is not None:
                headers = {"Retry-After": str(exc.retry_after)}
                return kiosk, _error(429, "upstream_rate_limited", f"{exc}; retry in {exc.retry_after} s", headers)
            return kiosk, _error(502, "upstream", str(exc))
        return kiosk, JSONResponse({"signed_url": signed}, headers={"Cache-Control": "no-store"})


#: ``Retry-After`` on a 503 while the shared state is unreachable.
UNAVAILABLE_RETRY_AFTER = 5


async def _healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("store unavailable path=%s error=%r", request.url.path, str(exc))
    headers = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}
    return _error(503, "unavailable", "the backend's shared state is unreachable", headers)


def build_app(signer: Signer) -> Starlette:
    """The Starlette app: signed URLs, heartbeats, the fleet view, metrics and ``/healthz``."""
    stats = metrics.Metrics(signer.config, signer.store)
    board = fleet.Fleet(signer.config, signer.store, signer.admit)
    return Starlette(
        routes=[
            Route("/signed-url", stats.timed("signed_url", signer.signed_url, count=True), methods=["GET"]),
            Route("/heartbeat", stats.timed("heartbeat", board.heartbeat), methods=["POST"]),
            Route("/fleet.json", stats.timed("fleet", board.fleet_json), methods=["GET"]),
            Route("/fleet", stats.timed("fleet", board.fleet_page), methods=["GET"]),
            Route("/fleet/login", board.login, methods=["POST"]),
            Route("/metrics", stats.endpoint, methods=["GET"]),
            Route("/healthz", _healthz, methods=["GET"]),
        ],
        exception_handlers={StoreUnavailable: _store_unavailable},
    )


async def serve(
    config: BackendServerConfig,
    api_key: str,
    *,
    shutdown_trigger: Callable[[], Any] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_trigger`` returns (or cancelled); started value: the bound URLs."""
    logs.register_secret(api_key)
    upstream = UpstreamPool(config.api_base)
    try:
        async with open_store(config) as store:
            app = build_app(Signer(config, api_key, upstream, store))
            host, port = parse_listen(config.listen)
            await httpserver.serve(
                app, host, port, shutdown_trigger=shutdown_trigger, graceful_timeout=SHUTDOWN_TIMEOUT,
                task_status=task_status,
            )
    finally:
        with trio.CancelScope(shield=True):
            await upstream.aclose()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kioskd backend",
        description=f"Run the reference signing backend (API key from ${API_KEY_ENV}), "
        "or `kioskd backend hash-token` to make a kiosk token.",
    )
    parser.add_argument("--config", default="/etc/kioskd/backend.toml", help="backend.toml (default: %(default)s)")
    parser.add_argument("--log-level", default="info", choices=sorted(logs.LEVELS), help="default: %(default)s")
    parser.add_argument(
        "--listen", help="HOST:PORT instead of the config's listen (one per replica, e.g. kioskd-backend@8701)"
    )
    return parser


def _hash_token_main(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="kioskd backend hash-token",
        description="Print a new random kiosk token and its SHA-256: the token goes on the kiosk "
        "(/etc/kioskd/token), the hash into the backend's config ([[kiosk]] token_sha256).",
    ).parse_args(argv)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    print(f"token = {token}")
    print(f"token_sha256 = {hash_token(token)}")
    print("# the token goes in the kiosk's /etc/kioskd/token (mode 0600); the hash in backend.toml [[kiosk]]")
    return 0


async def _until_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("stopping signal=%s", signal.Signals(signum).name)
            return


def main(argv: list[str]) -> int:
    """``kioskd backend [--config PATH]`` or ``kioskd backend hash-token``."""
    if argv[:1] == ["hash-token"]:
        return _hash_token_main(argv[1:])
    if argv[:1] == ["kiosks"]:
        from kioskd.backend.kiosks import main as kiosks_main

        return kiosks_main(argv[1:])
    args = _parser().parse_args(argv)
    logs.setup_logging(args.log_level)
    api_key = os.environ.get(API_KEY_ENV, "").strip()
    if not api_key:
        print(f"kioskd backend: ${API_KEY_ENV} is not set (put it in /etc/kioskd/backend.env)", file=sys.stderr)
        return EXIT_USAGE
    logs.register_secret(api_key)
    config = load_server_config_for("kioskd backend", args.config)
    if config is None:
        return EXIT_USAGE
    if args.listen:
        try:
            parse_listen(args.listen)
        except ValueError as exc:
            print(f"kioskd backend: --listen {exc}", file=sys.stderr)
            return EXIT_USAGE
        config = dataclasses.replace(config, listen=args.listen)
    from kioskd.backend.redis_store import describe_url

    store = describe_url(config.redis_url) if config.redis_url else "in-process"
    log.info(
        "backend starting listen=%s kiosks=%d api_base=%s store=%s",
        config.listen, len(config.kiosk), config.api_base, store,
    )
    trio.run(lambda: serve(config, api_key, shutdown_trigger=_until_signal))
    return 0

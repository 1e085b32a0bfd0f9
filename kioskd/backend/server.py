"""``kioskd backend``: the reference signing backend (it holds the ElevenLabs API key).

``GET /signed-url?agent_id=ID`` with ``Authorization: Bearer <kiosk token>``:

- 401 unknown or missing token (SHA-256 compared in constant time with each kiosk's)
- 400 no ``agent_id``; 403 agent not in that kiosk's ``agents``
- 429 over the kiosk's token bucket, with ``Retry-After`` in whole seconds
- 502 the ElevenLabs API failed (down, slow, non-200, bad JSON), JSON body, no secrets
- 503 the shared state (Redis) is unreachable, with ``Retry-After``: fail closed
- 200 ``{"signed_url": "wss://…"}``

``GET /healthz`` → ``{"ok": true}``. Served by hypercorn's Trio worker. The state
(buckets, heartbeats, registry, revocations) is a :class:`~kioskd.backend.store.Store`:
in this process, or in Redis with ``redis_url``. Heartbeats and the fleet view are in
:mod:`kioskd.backend.fleet`, ``/metrics`` in :mod:`kioskd.backend.metrics`.
``kioskd backend hash-token`` prints a new kiosk token and the hash for backend.toml;
``kioskd backend kiosks add|revoke|list`` manages the registry (:mod:`kioskd.backend.kiosks`).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kioskd import logs
from kioskd.backend import fleet, metrics
from kioskd.backend.server_config import (
    BackendServerConfig,
    KioskEntry,
    TokenBucket,
    load_server_config,
    parse_listen,
)
from kioskd.backend.store import Store, StoreUnavailable, open_store
from kioskd.config import ConfigError

__all__ = ["API_KEY_ENV", "build_app", "hash_token", "main", "serve"]

log = logging.getLogger(__name__)

API_KEY_ENV = "ELEVENLABS_API_KEY"
SIGNED_URL_PATH = "/v1/convai/conversation/get_signed_url"
TOKEN_BYTES = 32
EXIT_USAGE = 2
#: Upstream replies larger than this are not JSON we want.
MAX_UPSTREAM_BODY = 64 * 1024
#: A graceful hypercorn shutdown gets this long.
SHUTDOWN_TIMEOUT = 5.0


def hash_token(token: str) -> str:
    """The SHA-256 hex digest of a kiosk token, as written in ``token_sha256``."""
    return hashlib.sha256(token.encode()).hexdigest()


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


class UpstreamError(Exception):
    """The ElevenLabs API did not give a signed URL; the message is safe to return and log."""


class Signer:
    """Authorises kiosks, rate-limits them and asks ElevenLabs for signed URLs."""

    def __init__(
        self,
        config: BackendServerConfig,
        api_key: str,
        client: httpx.AsyncClient,
        store: Store,
    ) -> None:
        self.config = config
        self.store = store
        self._api_key = api_key
        self._client = client

    async def authenticate(self, authorization: str | None) -> KioskEntry | None:
        """The kiosk whose token is in ``Authorization: Bearer …``, or None (unknown or revoked)."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return await self.store.kiosk_for_token(hash_token(token.strip()))

    async def rate_limit(self, kiosk_id: str) -> int | None:
        """None if the kiosk may ask now (one URL charged), else the ``Retry-After`` seconds."""
        wait = await self.store.take(kiosk_id)
        return TokenBucket.retry_after(wait) if wait > 0 else None

    async def fetch(self, agent_id: str) -> str:
        """A signed URL from the ElevenLabs API, within ``upstream_timeout``. Raises UpstreamError."""
        url = self.config.api_base.rstrip("/") + SIGNED_URL_PATH
        try:
            with trio.fail_after(self.config.upstream_timeout):
                response = await self._client.get(url, params={"agent_id": agent_id}, headers={"xi-api-key": self._api_key})
        except trio.TooSlowError:
            raise UpstreamError(f"no answer within {self.config.upstream_timeout:g} s") from None
        except httpx.TimeoutException:
            raise UpstreamError(f"no answer within {self.config.upstream_timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"cannot reach the API ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise UpstreamError(f"the API answered {response.status_code}")
        if len(response.content) > MAX_UPSTREAM_BODY:
            raise UpstreamError("the API's reply is too large")
        try:
            body: Any = response.json()
        except ValueError:
            raise UpstreamError("the API's reply is not JSON") from None
        signed = body.get("signed_url") if isinstance(body, dict) else None
        if not isinstance(signed, str) or not signed.startswith(("wss://", "ws://")):
            raise UpstreamError("the API's reply has no ws:// or wss:// signed_url")
        return signed

    async def signed_url(self, request: Request) -> JSONResponse:
        """``GET /signed-url``: the whole decision, logged without secrets."""
        started = time.monotonic()
        kiosk = await self.authenticate(request.headers.get("authorization"))
        agent_id = request.query_params.get("agent_id", "").strip()
        response = await self._decide(kiosk, agent_id)
        log.info(
            "signed url request kiosk=%s agent=%s status=%d latency_ms=%.0f",
            kiosk.id if kiosk else "-",
            agent_id or "-",
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return response

    async def _decide(self, kiosk: KioskEntry | None, agent_id: str) -> JSONResponse:
        if kiosk is None:
            return _error(401, "unauthorized", "missing or unknown kiosk token", {"WWW-Authenticate": "Bearer"})
        if not agent_id:
            return _error(400, "bad_request", "agent_id query parameter is required")
        if agent_id not in kiosk.agents:
            return _error(403, "forbidden", "this kiosk may not use that agent")
        retry_after = await self.rate_limit(kiosk.id)
        if retry_after is not None:
            return _error(429, "rate_limited", f"retry in {retry_after} s", {"Retry-After": str(retry_after)})
        try:
            signed = await self.fetch(agent_id)
        except UpstreamError as exc:
            await self.store.refund(kiosk.id)  # charged only for URLs actually issued
            log.warning("upstream failed kiosk=%s agent=%s error=%r", kiosk.id, agent_id, str(exc))
            return _error(502, "upstream", str(exc))
        return JSONResponse({"signed_url": signed}, headers={"Cache-Control": "no-store"})


#: ``Retry-After`` on a 503 while the shared state is unreachable.
UNAVAILABLE_RETRY_AFTER = 5


async def _healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("store unavailable path=%s error=%r", request.url.path, str(exc))
    return _error(503, "unavailable", "the backend's shared state is unreachable", {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)})


def build_app(signer: Signer) -> Starlette:
    """The Starlette app: signed URLs, heartbeats, the fleet view, metrics and ``/healthz``."""
    stats = metrics.Metrics(signer.config, signer.store)
    board = fleet.Fleet(signer.config, signer.store, signer.authenticate)
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


def _hypercorn_config(listen: str) -> HypercornConfig:
    host, port = parse_listen(listen)
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None  # we log each request ourselves, without the query string
    config.errorlog = logging.getLogger("hypercorn.error")  # through the redacting root handler
    config.graceful_timeout = SHUTDOWN_TIMEOUT
    return config


async def serve(
    config: BackendServerConfig,
    api_key: str,
    *,
    shutdown_trigger: Callable[[], Any] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_trigger`` returns (or cancelled); started value: the bound URLs."""
    logs.register_secret(api_key)
    timeout = httpx.Timeout(config.upstream_timeout)
    async with (
        open_store(config) as store,
        httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client,
    ):
        app = build_app(Signer(config, api_key, client, store))
        await hypercorn_serve(
            app,  # type: ignore[arg-type]
            _hypercorn_config(config.listen),
            shutdown_trigger=shutdown_trigger,
            task_status=task_status,
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kioskd backend",
        description=f"Run the reference signing backend (API key from ${API_KEY_ENV}), "
        "or `kioskd backend hash-token` to make a kiosk token.",
    )
    parser.add_argument("--config", default="/etc/kioskd/backend.toml", help="backend.toml (default: %(default)s)")
    parser.add_argument("--log-level", default="info", choices=sorted(logs.LEVELS), help="default: %(default)s")
    return parser


def _hash_token_main() -> int:
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
        return _hash_token_main()
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
    try:
        config = load_server_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"kioskd backend: {problem}", file=sys.stderr)
        return EXIT_USAGE
    log.info("backend starting listen=%s kiosks=%d api_base=%s", config.listen, len(config.kiosk), config.api_base)
    trio.run(lambda: serve(config, api_key, shutdown_trigger=_until_signal))
    return 0

"""``kioskd backend``: the reference signing backend (it holds the ElevenLabs API key).

``GET /signed-url?agent_id=ID`` with ``Authorization: Bearer <kiosk token>``:

- 401 unknown or missing token (SHA-256 compared in constant time with each kiosk's)
- 400 no ``agent_id``; 403 agent not in that kiosk's ``agents``
- 429 over the kiosk's token bucket, with ``Retry-After`` in whole seconds
- 502 the ElevenLabs API failed (down, slow, non-200, bad JSON), JSON body, no secrets
- 200 ``{"signed_url": "wss://…"}``

``GET /healthz`` → ``{"ok": true}``. Served by hypercorn's Trio worker.
``kioskd backend hash-token`` prints a new kiosk token and the hash for backend.toml.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
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
from kioskd.backend.server_config import (
    BackendServerConfig,
    KioskEntry,
    TokenBucket,
    load_server_config,
    parse_listen,
)
from kioskd.config import ConfigError

__all__ = ["API_KEY_ENV", "build_app", "hash_token", "main", "serve"]

log = logging.getLogger(__name__)

API_KEY_ENV = "ELEVENLABS_API_KEY"
#: The signed-URL endpoint as the current API (and the Python SDK) spells it, then the seed's
#: older spelling, asked only when the first answers 404 (NOTES: "get-signed-url").
SIGNED_URL_PATHS = ("/v1/convai/conversation/get-signed-url", "/v1/convai/conversation/get_signed_url")
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._api_key = api_key
        self._client = client
        self._clock = clock
        self._hashes = [(entry, entry.token_sha256.lower()) for entry in config.kiosk]
        self._buckets: dict[str, TokenBucket] = {}

    def authenticate(self, authorization: str | None) -> KioskEntry | None:
        """The kiosk whose token is in ``Authorization: Bearer …``, or None. Checks every kiosk."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = hash_token(token.strip())
        found = None
        for entry, expected in self._hashes:  # no early exit: same work for every token
            if hmac.compare_digest(digest, expected):
                found = entry
        return found

    def rate_limit(self, kiosk_id: str) -> int | None:
        """None if the kiosk may ask now, else the ``Retry-After`` seconds."""
        now = self._clock()
        bucket = self._buckets.get(kiosk_id)
        if bucket is None:
            bucket = self._buckets[kiosk_id] = TokenBucket(self.config.rate_per_minute, self.config.burst, now)
        wait = bucket.take(now)
        return TokenBucket.retry_after(wait) if wait > 0 else None

    async def fetch(self, agent_id: str) -> str:
        """A signed URL from the ElevenLabs API, within ``upstream_timeout``. Raises UpstreamError."""
        try:
            with trio.fail_after(self.config.upstream_timeout):
                for path in SIGNED_URL_PATHS:
                    url = self.config.api_base.rstrip("/") + path
                    response = await self._client.get(url, params={"agent_id": agent_id}, headers={"xi-api-key": self._api_key})
                    if response.status_code != 404:
                        break
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
        kiosk = self.authenticate(request.headers.get("authorization"))
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
        retry_after = self.rate_limit(kiosk.id)
        if retry_after is not None:
            return _error(429, "rate_limited", f"retry in {retry_after} s", {"Retry-After": str(retry_after)})
        try:
            signed = await self.fetch(agent_id)
        except UpstreamError as exc:
            log.warning("upstream failed kiosk=%s agent=%s error=%r", kiosk.id, agent_id, str(exc))
            return _error(502, "upstream", str(exc))
        return JSONResponse({"signed_url": signed}, headers={"Cache-Control": "no-store"})


async def _healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def build_app(signer: Signer) -> Starlette:
    """The Starlette app: ``/signed-url`` and ``/healthz``."""
    return Starlette(
        routes=[
            Route("/signed-url", signer.signed_url, methods=["GET"]),
            Route("/healthz", _healthz, methods=["GET"]),
        ]
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
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        app = build_app(Signer(config, api_key, client))
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

"""Heartbeats in, the fleet view out.

``POST /heartbeat`` (kiosk token): a JSON object with at least ``state``; kept as
sent, with the time, as the kiosk's latest status. The 200 answer is the kiosk's
health check: an idle kiosk need not mint a signed URL to learn the backend is up.

``GET /fleet.json`` and ``GET /fleet`` (operator token: ``Authorization: Bearer``
or the cookie the login form at ``POST /fleet/login`` sets): every kiosk with its
state, whether it is online (a heartbeat within three of its intervals), last seen,
problems and version; the page lists kiosks with problems first and refreshes itself.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from kioskd.backend.server_config import BackendServerConfig
from kioskd.backend.store import Heartbeat, KioskRecord, Store

__all__ = ["MAX_HEARTBEAT_BYTES", "Fleet", "FleetKiosk", "fleet_view"]

log = logging.getLogger(__name__)

#: A heartbeat larger than this is refused (413).
MAX_HEARTBEAT_BYTES = 16 * 1024
#: The login form's body, at most.
MAX_LOGIN_BYTES = 4 * 1024
#: A kiosk is offline after this many missed heartbeats.
MISSED_HEARTBEATS = 3
#: The page reloads itself this often (seconds).
PAGE_REFRESH = 15
COOKIE = "kioskd_operator"
COOKIE_MAX_AGE = 12 * 3600
MAX_STATE_LEN = 64

T = TypeVar("T")


class Admit(Protocol):
    """``authorize(token sha256)`` for the request's bearer token, or the reply refusing it
    (throttled, no valid token, or ``authorize`` found none)."""

    async def __call__(self, request: Request, authorize: Callable[[str], Awaitable[T | None]]) -> T | Response:
        """See the class docstring."""
        ...


@dataclass(frozen=True)
class FleetKiosk:
    """One row of the fleet view."""

    id: str
    state: str
    online: bool
    last_seen: float | None
    problems: list[str]
    version: str
    revoked: bool = False
    status: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The row as ``/fleet.json`` shows it (the heartbeat as sent under ``status``)."""
        return {
            "id": self.id,
            "state": self.state,
            "online": self.online,
            "last_seen": self.last_seen,
            "problems": self.problems,
            "version": self.version,
            "revoked": self.revoked,
            "status": self.status,
        }


def _problems(status: dict[str, Any]) -> list[str]:
    raw = status.get("problems")
    if not isinstance(raw, list):
        return []
    return [item if isinstance(item, str) else json.dumps(item, sort_keys=True) for item in raw]


def _interval(status: dict[str, Any], default: float) -> float:
    value = status.get("heartbeat_interval")
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return float(value) if ok else default  # type: ignore[arg-type]


def fleet_view(
    records: list[KioskRecord], heartbeats: list[Heartbeat], now: float, default_interval: float
) -> list[FleetKiosk]:
    """Every kiosk known or heard from, problems first then by id (pure)."""
    latest = {hb.kiosk_id: hb for hb in heartbeats}
    revoked = {r.entry.id for r in records if r.revoked}
    ids = list(dict.fromkeys([r.entry.id for r in records] + sorted(latest)))
    rows = []
    for kiosk_id in ids:
        hb = latest.get(kiosk_id)
        if hb is None:
            rows.append(FleetKiosk(kiosk_id, "unknown", False, None, ["no heartbeat yet"], "", kiosk_id in revoked))
            continue
        status = hb.status
        silent = now - hb.last_seen
        online = silent <= MISSED_HEARTBEATS * _interval(status, default_interval)
        problems = _problems(status)
        if not online:
            problems.insert(0, f"offline: no heartbeat for {silent:.0f} s")
        if kiosk_id in revoked:
            problems.insert(0, "token revoked")
        version = status.get("version")
        rows.append(
            FleetKiosk(
                kiosk_id, str(status.get("state", "")), online, hb.last_seen, problems,
                version if isinstance(version, str) else "", kiosk_id in revoked, status,
            )
        )
    rows.sort(key=lambda row: (not row.problems, row.id))
    return rows


def check_heartbeat(body: bytes) -> dict[str, Any]:
    """The heartbeat as a dict, or ValueError naming what is wrong (pure)."""
    try:
        status = msgspec.json.decode(body)
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(status, dict):
        raise ValueError("the body must be a JSON object")
    state = status.get("state")
    if not isinstance(state, str) or not state.strip():
        raise ValueError("'state' is required: a non-empty string")
    if len(state) > MAX_STATE_LEN:
        raise ValueError(f"'state' is longer than {MAX_STATE_LEN} characters")
    return status


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it passes ``limit`` bytes (not read further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


class Fleet:
    """The ``/heartbeat``, ``/fleet.json``, ``/fleet`` and ``/fleet/login`` endpoints."""

    def __init__(
        self,
        config: BackendServerConfig,
        store: Store,
        admit: Admit,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._admit = admit
        self._wall_clock = wall_clock

    async def heartbeat(self, request: Request) -> Response:
        """``POST /heartbeat``: keep the kiosk's status; 200 also answers its health check.

        A valid body is admitted and recorded in one store step; an invalid one is answered
        400/413 only once its token is known to be good (401 otherwise)."""
        body = await _read_capped(request, MAX_HEARTBEAT_BYTES)
        problem = ""
        try:
            status = check_heartbeat(body) if body is not None else None
        except ValueError as exc:
            status, problem = None, str(exc)
        if status is not None:
            admitted = await self._admit(request, partial(self._store.admit_heartbeat, status=status))
            if isinstance(admitted, Response):
                return admitted
            kiosk, last_seen = admitted
            return JSONResponse({"ok": True, "kiosk": kiosk.id, "last_seen": last_seen})
        known = await self._admit(request, self._store.kiosk_for_token)
        if isinstance(known, Response):
            return known
        if not problem:
            return _error(413, "too_large", f"a heartbeat is at most {MAX_HEARTBEAT_BYTES} bytes")
        log.warning("heartbeat refused kiosk=%s problem=%r", known.id, problem)
        return _error(400, "bad_request", problem)

    def _is_operator(self, request: Request) -> bool:
        expected = self._config.operator_token_sha256.lower()
        scheme, _, bearer = request.headers.get("authorization", "").strip().partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else request.cookies.get(COOKIE, "")
        if not expected or not token:
            return False
        return hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), expected)

    async def _rows(self) -> list[FleetKiosk]:
        records = await self._store.kiosks()
        heartbeats = await self._store.heartbeats()
        return fleet_view(records, heartbeats, self._wall_clock(), self._config.heartbeat_interval)

    def _off(self) -> Response | None:
        if self._config.operator_token_sha256:
            return None
        return _error(404, "not_found", "the fleet view is off: set operator_token_sha256 in backend.toml")

    async def fleet_json(self, request: Request) -> Response:
        """``GET /fleet.json``: ``{"kiosks": [...]}`` for the operator."""
        if (off := self._off()) is not None:
            return off
        if not self._is_operator(request):
            return _error(401, "unauthorized", "the operator's token is required", {"WWW-Authenticate": "Bearer"})
        rows = await self._rows()
        body = msgspec.json.encode({"kiosks": [row.as_json() for row in rows]})
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})

    async def fleet_page(self, request: Request) -> Response:
        """``GET /fleet``: the HTML view, or the login form."""
        if (off := self._off()) is not None:
            return off
        if not self._is_operator(request):
            return _login_page("", 401)
        rows = await self._rows()
        return HTMLResponse(render_page(rows, self._wall_clock()), headers=_PAGE_HEADERS)

    async def login(self, request: Request) -> Response:
        """``POST /fleet/login`` (form field ``token``): set the cookie, back to ``/fleet``."""
        if (off := self._off()) is not None:
            return off
        body = await _read_capped(request, MAX_LOGIN_BYTES)
        token = parse_qs((body or b"").decode("utf-8", "replace")).get("token", [""])[0].strip()
        expected = self._config.operator_token_sha256.lower()
        if not token or not hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), expected):
            log.warning("fleet login refused")
            return _login_page("That is not the operator's token.", 401)
        response = RedirectResponse("/fleet", status_code=303)
        secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
        response.set_cookie(
            COOKIE, token, max_age=COOKIE_MAX_AGE, path="/", httponly=True, samesite="strict", secure=secure
        )
        return response


_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;padding:1rem;background:#f6f6f6;color:#111}
h1{font-size:1.4rem;margin:0 0 .5rem}
.summary{margin:0 0 1rem}
ul{list-style:none;padding:0;margin:0}
li{background:#fff;border-left:.5rem solid #2a7;border-radius:.3rem;padding:.6rem .8rem;margin:0 0 .6rem;
  overflow-wrap:anywhere}
li.problem{border-left-color:#c22}
li.offline{background:#fde}
.id{font-weight:bold;font-size:1.1rem}
.meta{color:#444;font-size:.9rem}
.problems{margin:.3rem 0 0;padding-left:1.1rem;list-style:disc;color:#900}
.problems li{background:none;border:0;padding:0;margin:0}
form{display:flex;flex-direction:column;gap:.6rem;max-width:24rem}
input,button{font-size:1rem;padding:.6rem}
.error{color:#900}
"""


def _page(title: str, body: str, refresh: bool) -> str:
    meta = f'<meta http-equiv="refresh" content="{PAGE_REFRESH}">' if refresh else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def render_page(rows: list[FleetKiosk], now: float) -> str:
    """The fleet page (every value escaped)."""
    online = sum(row.online for row in rows)
    troubled = sum(bool(row.problems) for row in rows)
    items = []
    for row in rows:
        classes = " ".join(c for c, on in (("problem", bool(row.problems)), ("offline", not row.online)) if on)
        seen = "never seen" if row.last_seen is None else f"last seen {_ago(max(0.0, now - row.last_seen))}"
        meta = " · ".join(
            part for part in (
                html.escape(row.state), "online" if row.online else "offline", seen,
                f"version {html.escape(row.version)}" if row.version else "",
            ) if part
        )
        problems = "".join(f"<li>{html.escape(p)}</li>" for p in row.problems)
        items.append(
            f'<li class="{classes}" data-kiosk="{html.escape(row.id)}"><div class="id">{html.escape(row.id)}</div>'
            f'<div class="meta">{meta}</div>' + (f'<ul class="problems">{problems}</ul>' if problems else "") + "</li>"
        )
    body = (
        "<h1>kioskd fleet</h1>"
        f'<p class="summary">{len(rows)} kiosks · {online} online · {troubled} with problems'
        f" · refreshes every {PAGE_REFRESH} s</p>"
        f'<ul id="kiosks">{"".join(items)}</ul>'
    )
    return _page("kioskd fleet", body, refresh=True)


def _login_page(message: str, status: int) -> HTMLResponse:
    error = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    body = (
        "<h1>kioskd fleet</h1>"
        f"{error}"
        '<form method="post" action="/fleet/login">'
        '<label for="token">Operator token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required>'
        '<button type="submit">Sign in</button></form>'
    )
    return HTMLResponse(_page("kioskd fleet: sign in", body, refresh=False), status_code=status, headers=_PAGE_HEADERS)

"""The kiosk's local screen: a page served by the daemon, fed by Server-Sent Events.

``[screen] listen = "127.0.0.1:8088"`` starts it inside the daemon's nursery (Starlette on
hypercorn's Trio worker). Routes:

* ``GET /`` and ``/static/…``: the page, its script and style, all shipped with kioskd;
* ``GET /events``: ``text/event-stream``; every message is a whole
  :meth:`~kioskd.screen.captions.ScreenModel.snapshot` (a reload shows the conversation so far);
* ``POST /api/talk``, ``/api/end``, ``/api/say`` ``{"text"}``, ``/api/feedback``
  ``{"rating": "like"|"dislike"}``: the visitor's touches, answered ``{"ok": …, "error"?}``.

The page is for the kiosk's own browser. Requests whose ``Host`` is not the listen address
(DNS rebinding) or whose ``Origin`` is another site are refused, POST bodies must be small
JSON (a cross-site form cannot send that without a preflight this server never allows), and
at most :data:`MAX_STREAMS` pages may listen at once.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kioskd.screen.captions import ScreenModel

__all__ = ["MAX_STREAMS", "ScreenActions", "ScreenServer"]

log = logging.getLogger(__name__)

#: Pages that may listen to /events at once (the kiosk's browser needs one).
MAX_STREAMS = 8
#: A comment line on an idle event stream this often, so a dead page is noticed.
KEEPALIVE = 15.0
#: Largest POST body accepted.
MAX_BODY = 2048
#: Longest text a visitor may type.
MAX_TEXT = 500
#: The page's files (package data) and their content types.
ASSETS = {"index.html": "text/html; charset=utf-8", "screen.css": "text/css", "screen.js": "text/javascript"}
#: No page may be framed or load anything from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class ScreenActions:
    """What the page's buttons do; each returns ``None`` on success or a sentence for the visitor."""

    talk: Callable[[], Awaitable[str | None]]
    end: Callable[[], Awaitable[str | None]]
    say: Callable[[str], Awaitable[str | None]]
    feedback: Callable[[str], Awaitable[str | None]]


def _asset(name: str) -> bytes:
    return resources.files("kioskd.screen").joinpath("static", name).read_bytes()


class ScreenServer:
    """Serves the page for one :class:`ScreenModel`; call :meth:`changed` after every update."""

    def __init__(
        self,
        listen: tuple[str, int],
        model: ScreenModel,
        actions: ScreenActions,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.listen = listen
        self.model = model
        self.actions = actions
        self.clock = clock
        self.url = ""
        self._changed = trio.Event()
        self._streams = 0
        self._assets = {name: _asset(name) for name in ASSETS}

    def changed(self) -> None:
        """Wake every listening page (cheap; several changes before a page looks coalesce)."""
        self._changed.set()
        self._changed = trio.Event()

    def app(self) -> Starlette:
        """The ASGI application."""
        routes = [
            Route("/", self._page, methods=["GET"]),
            Route("/static/{name}", self._static, methods=["GET"]),
            Route("/events", self._events, methods=["GET"]),
            Route("/api/{action}", self._api, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; started value: the page's URL."""
        host, port = self.listen
        config = HypercornConfig()
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        config.graceful_timeout = 0.5

        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(functools.partial(hypercorn_serve, self.app(), config))  # type: ignore[arg-type]
            self.url = binds[0]
            log.info("screen serving url=%s", self.url)
            task_status.started(self.url)

    # -- routes ------------------------------------------------------------------------

    def _refused(self, request: Request) -> Response | None:
        """Refuse a request from anything but the kiosk's own page (rebinding, other sites)."""
        host = request.headers.get("host", "")
        port = self.url.rsplit(":", 1)[-1] if self.url else str(self.listen[1])
        allowed = {f"{self.listen[0]}:{port}", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
        if host not in allowed:
            return JSONResponse({"ok": False, "error": "unknown host"}, status_code=421)
        origin = request.headers.get("origin")
        if origin is not None and origin != f"http://{host}":
            return JSONResponse({"ok": False, "error": "cross-origin request refused"}, status_code=403)
        return None

    async def _page(self, request: Request) -> Response:
        return self._refused(request) or self._file("index.html")

    async def _static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return Response("not found", status_code=404, headers=SECURITY_HEADERS)
        return self._refused(request) or self._file(name)

    def _file(self, name: str) -> Response:
        body = self._assets[name]
        if name == "index.html":  # the kiosk's language before the first snapshot arrives
            lang = json.dumps(self.model.language or "en")[1:-1].encode()
            body = body.replace(b'<html lang="en">', b'<html lang="' + lang + b'">', 1)
        return Response(body, media_type=ASSETS[name], headers=SECURITY_HEADERS)

    async def _events(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if self._streams >= MAX_STREAMS:
            return JSONResponse({"ok": False, "error": "too many pages listening"}, status_code=503)
        return StreamingResponse(self._stream(), media_type="text/event-stream", headers=SECURITY_HEADERS)

    async def _stream(self) -> AsyncIterator[str]:
        # counted from its first step: a stream cancelled before it ever ran would never uncount
        self._streams += 1
        try:
            seen = -1
            while True:
                # Take the event before looking at the version: a change made while this
                # stream is suspended in ``yield`` sets the event it then waits on.
                changed = self._changed
                if self.model.version != seen:
                    seen = self.model.version
                    yield f"data: {json.dumps(self.model.snapshot(self.clock()))}\n\n"
                with trio.move_on_after(KEEPALIVE) as idle:
                    await changed.wait()
                if idle.cancelled_caught:
                    yield ": keep-alive\n\n"
        finally:
            self._streams -= 1

    async def _api(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"ok": False, "error": "expected application/json"}, status_code=415)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"ok": False, "error": "request too large"}, status_code=413)
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return JSONResponse({"ok": False, "error": "expected a JSON object"}, status_code=400)
        error = await self._act(request.path_params["action"], data)
        if error == "unknown action":
            return JSONResponse({"ok": False, "error": error}, status_code=404)
        return JSONResponse({"ok": error is None, **({"error": error} if error else {})})

    async def _act(self, action: str, data: dict[str, Any]) -> str | None:
        if action == "talk":
            return await self.actions.talk()
        if action == "end":
            return await self.actions.end()
        if action == "say":
            text = data.get("text")
            if not isinstance(text, str) or not text.strip():
                return "text must be a non-empty string"
            if len(text) > MAX_TEXT:
                return f"text is longer than {MAX_TEXT} characters"
            error = await self.actions.say(text.strip())
            if error is None and self.model.on_visitor(text, final=True):
                self.changed()  # typed words are the visitor's too (no transcript comes back)
            return error
        if action == "feedback":
            rating = data.get("rating")
            if rating not in ("like", "dislike"):
                return "rating must be 'like' or 'dislike'"
            return await self.actions.feedback(str(rating))
        return "unknown action"

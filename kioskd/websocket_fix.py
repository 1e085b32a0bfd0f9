"""A fix for trio-websocket 0.12: no pong after our own Close frame.

trio-websocket's reader answers every ping with a pong. A ping that arrives after this
side sent its Close (wsproto state ``LOCAL_CLOSING``) makes wsproto raise
``LocalProtocolError`` in the reader task, which takes the connection's nursery, and for
a server the whole ``serve_websocket``, down (trio-websocket issue #184; the open pull
request #198 makes the same change). RFC 6455 §5.5.1: after sending Close an endpoint
sends nothing more, so the ping is simply not answered.
"""

from __future__ import annotations

from typing import Any

import trio_websocket
from wsproto.connection import ConnectionState
from wsproto.events import Ping

__all__ = ["install"]

_original = trio_websocket.WebSocketConnection._handle_ping_event


async def _handle_ping_event(self: trio_websocket.WebSocketConnection, event: Ping) -> None:
    """Answer a ping only while the connection is open (else it is closing: say nothing)."""
    wsproto: Any = self._wsproto  # the state the original forgets to check
    if wsproto.state is not ConnectionState.OPEN:
        return
    await _original(self, event)


def install() -> None:
    """Apply the fix (idempotent); called where kioskd opens WebSockets."""
    trio_websocket.WebSocketConnection._handle_ping_event = _handle_ping_event  # type: ignore[method-assign]

"""sd_notify without dependencies: READY, STATUS, STOPPING, RELOADING and the watchdog.

Every function is a no-op returning False when ``$NOTIFY_SOCKET`` is unset (not
started by systemd). Sends never block: a full socket queue drops the message.

The watchdog is pinged from :func:`watchdog_task`, a Trio task: if the Trio
loop wedges (a blocking call on its thread), the pings stop and systemd
restarts the service. A helper thread would keep pinging and hide the hang.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

import trio

__all__ = [
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog_interval",
    "watchdog_ping",
    "watchdog_task",
]

log = logging.getLogger(__name__)

#: Environment variables systemd sets for a Type=notify service.
NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
#: Pings per watchdog interval (systemd advises at least two).
PINGS_PER_INTERVAL = 2
#: STATUS= text is cut to this many characters.
MAX_STATUS_CHARS = 200


def _address() -> str | None:
    """The notify socket address from the environment (``@`` → abstract namespace), or None."""
    path = os.environ.get(NOTIFY_SOCKET_ENV, "")
    if path.startswith("@"):
        return "\0" + path[1:]
    if path.startswith("/"):
        return path
    return None  # unset, or a kind we do not speak (vsock:)


def notify(*lines: str) -> bool:
    """Send ``KEY=value`` lines to systemd as one datagram. True if it was sent.

    Returns False (and does nothing) when ``$NOTIFY_SOCKET`` is unset; a failed send is
    logged at debug level and returns False, never raises.
    """
    address = _address()
    if address is None or not lines:
        return False
    payload = "\n".join(lines).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, address)
    except OSError as exc:
        log.debug("sd_notify failed error=%s", exc.strerror or exc)
        return False
    return True


def ready() -> bool:
    """Tell systemd start-up (or a reload) is finished: ``READY=1``."""
    return notify("READY=1")


def status(text: str) -> bool:
    """Set the one-line status ``systemctl status`` shows: ``STATUS=text``."""
    one_line = " ".join(text.split())[:MAX_STATUS_CHARS]
    return notify(f"STATUS={one_line}")


def stopping() -> bool:
    """Tell systemd the service is shutting down: ``STOPPING=1``."""
    return notify("STOPPING=1")


def reloading() -> bool:
    """Tell systemd a reload began (``RELOADING=1``); send :func:`ready` when done."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def watchdog_ping() -> bool:
    """Keep the watchdog from firing: ``WATCHDOG=1``."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds from ``$WATCHDOG_USEC``, or None when off.

    None as well when ``$WATCHDOG_PID`` names another process (the variables were
    inherited, not meant for us), or a value is not a positive integer.
    """
    pid = os.environ.get(WATCHDOG_PID_ENV)
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get(WATCHDOG_USEC_ENV, ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


def _is_healthy(healthy: Callable[[], bool]) -> bool:
    try:
        return bool(healthy())
    except Exception:
        log.exception("watchdog health check raised; counting it as unhealthy")
        return False


async def watchdog_task(
    healthy: Callable[[], bool],
    *,
    task_status: trio.TaskStatus[float | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send ``WATCHDOG=1`` every half watchdog interval, but only while ``healthy()`` is true.

    Start with ``await nursery.start(watchdog_task, healthy)``; the started value is
    the interval in seconds, or None when systemd set no watchdog (the task returns
    at once). ``healthy`` runs on the Trio thread and must not block.
    """
    interval = watchdog_interval()
    task_status.started(interval)
    if interval is None:
        return
    period = interval / PINGS_PER_INTERVAL
    was_healthy = True
    while True:
        now_healthy = _is_healthy(healthy)
        if now_healthy:
            watchdog_ping()
        elif was_healthy:
            log.warning("watchdog pings withheld: unhealthy interval=%.1f", interval)
        was_healthy = now_healthy
        await trio.sleep(period)

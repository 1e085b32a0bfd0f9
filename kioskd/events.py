"""The kiosk's event bus: what happened, as small JSON objects, for anyone listening.

One :class:`EventBus` per kiosk. Publishers (supervisor, daemon, controls) call
:meth:`EventBus.publish` on the Trio thread; it never blocks. Each subscriber
(``kioskd ctl watch``, the ``[hooks]`` runner, a screen) has its own bounded queue:
a slow subscriber loses the events published while its queue is full (and is told how
many, with a ``dropped`` event where they were lost), never slows the kiosk or the
other subscribers.

An event is a dict: ``{"type": …, "time": <unix seconds>, "seq": n, …fields}``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

__all__ = ["EVENT_TYPES", "Event", "EventBus", "Subscription"]

Event = dict[str, Any]

#: Every event type, and its fields besides type/time/seq.
EVENT_TYPES: dict[str, str] = {
    "state": "state, reason: the kiosk's state changed",
    "conversation_started": "id, resumed: a conversation opened (resumed: after a dropped link)",
    "conversation_ended": "id, reason: a conversation ended",
    "start_failed": "reason: a start gave up before a conversation opened",
    "visitor_said": "id, text: the visitor's words (the agent's transcript of them)",
    "agent_said": "id, text: the agent's words",
    "problem_appeared": "problem: something is broken (a plain sentence)",
    "problem_cleared": "problem: it works again",
    "notice": "text: the privacy notice shown or played before the first turn",
    "controls": "volume, muted, closed, open_hours: a live control changed",
}
#: Events a subscriber may have waiting before the oldest are dropped.
SUBSCRIBER_QUEUE = 256


class Subscription:
    """One subscriber's queue; iterate it (``async for event in sub``) until the bus closes it."""

    def __init__(self, maxlen: int) -> None:
        self._send, self._receive = trio.open_memory_channel[Event](maxlen)
        self.dropped = 0

    def _offer(self, event: Event) -> None:
        try:
            if self.dropped:  # the loss is reported where it happened, before newer events
                self._send.send_nowait({"type": "dropped", "time": event["time"], "count": self.dropped})
                self.dropped = 0
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.dropped += 1
        except trio.BrokenResourceError:
            pass

    def _dropped_notice(self, when: float) -> Event:
        count, self.dropped = self.dropped, 0
        return {"type": "dropped", "time": when, "count": count}

    async def receive(self) -> Event:
        """The next event (a ``dropped`` one says how many were lost while the queue was full)."""
        try:
            return self._receive.receive_nowait()
        except trio.WouldBlock:
            if self.dropped:
                return self._dropped_notice(round(time.time(), 3))
        return await self._receive.receive()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.receive()
            except trio.EndOfChannel:
                return


class EventBus:
    """Publish events; subscribers each get every event published while they are subscribed."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seq = itertools.count(1)
        self._subscribers: list[Subscription] = []
        self._listeners: list[Callable[[Event], None]] = []

    def publish(self, type: str, **fields: Any) -> Event:
        """Send an event of ``type`` (one of :data:`EVENT_TYPES`) to every subscriber; never blocks."""
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        event: Event = {"type": type, "time": round(self._clock(), 3), "seq": next(self._seq), **fields}
        for listener in list(self._listeners):
            listener(event)
        for sub in list(self._subscribers):
            sub._offer(event)
        return event

    def listen(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``listener(event)`` synchronously for each event (must not block); returns the unlisten function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @contextmanager
    def subscribe(self, maxlen: int = SUBSCRIBER_QUEUE) -> Iterator[Subscription]:
        """A queue of the events published from now until the block ends."""
        sub = Subscription(maxlen)
        self._subscribers.append(sub)
        try:
            yield sub
        finally:
            self._subscribers.remove(sub)
            sub._send.close()

    @property
    def subscribers(self) -> int:
        """How many queues are subscribed now."""
        return len(self._subscribers)

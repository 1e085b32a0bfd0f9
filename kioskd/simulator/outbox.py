"""Everything one simulated conversation sends, through one queue, in order.

So the delay and stall faults apply to all of it in order. Items are server events
(filtered by the conversation's client events through :meth:`Outbox.send`, or put as they
are), closes, interruption markers, audio chunks of a reply and deliberately broken text.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from kioskd.protocol import codec
from kioskd.protocol.server_events import AudioEvent, Interruption, InterruptionBody, ServerEvent
from kioskd.simulator.faults import AgentFaults
from kioskd.simulator.records import ChangeSignal, Conversation
from kioskd.simulator.replies import Reply

__all__ = ["RAW", "AudioItem", "Close", "InterruptMarker", "Malformed", "Outbox", "Outgoing", "malformed_text"]

#: Events sent whatever the client events say ("error" is not a ClientEvent; the metadata opens every conversation).
ALWAYS_SENT: Final = frozenset({"error", "conversation_initiation_metadata"})
#: The kind of a Malformed item that is sent as it is (AgentFaults.send_raw).
RAW: Final = "raw"


@dataclass
class Close:
    """Queue item: close the conversation with this code once everything before it is sent."""

    code: int
    reason: str


@dataclass
class InterruptMarker:
    """Queue item: an ``interruption`` with ``event_id`` (None: the last audio id actually sent)."""

    event_id: int | None


@dataclass
class AudioItem:
    """Queue item: one agent audio chunk of ``reply``."""

    reply: Reply
    event: AudioEvent


@dataclass
class Malformed:
    """Queue item: a deliberately broken event."""

    kind: str
    text: str


Outgoing = ServerEvent | Close | InterruptMarker | AudioItem | Malformed


class Outbox:
    """The queue of one conversation's outgoing items, and the task that sends them."""

    def __init__(self, events: Iterable[str]) -> None:
        #: the server event types this conversation gets (its client events)
        self.events = frozenset(events)
        self._in, self._out = trio.open_memory_channel[Outgoing](math.inf)
        #: when each ping went out, by event id (for the pong's round trip)
        self.ping_sent: dict[int, float] = {}
        #: the event id of the last audio chunk actually sent
        self.last_audio = 0

    def send(self, event: ServerEvent) -> None:
        """Queue ``event`` if this conversation's client events include its type ("error" always)."""
        kind = event.__struct_config__.tag
        if kind in self.events or kind in ALWAYS_SENT:
            self._in.send_nowait(event)

    def put(self, item: Outgoing) -> None:
        """Queue ``item`` as it is."""
        self._in.send_nowait(item)

    async def run(
        self, ws: WebSocketConnection, record: Conversation, faults: AgentFaults, changes: ChangeSignal,
        close: Callable[[int, str], Awaitable[None]], closed_by_peer: Callable[[ConnectionClosed], None],
    ) -> None:
        """Sends queued items in order, applying the delay and stall faults, until a close."""
        async for item in self._out:
            if faults.delay > 0:
                await trio.sleep(faults.delay)
            if isinstance(item, Close):  # an explicit close beats a stall
                await close(item.code, item.reason)
                return
            now = trio.current_time()
            if faults.stall:
                if isinstance(item, AudioItem) and item.reply.first_sent is None:
                    item.reply.first_sent = now  # lost audio still "plays" (and ends)
                continue
            event: ServerEvent | None = None
            text, kind, event_id = "", "", None  # (of a raw or malformed item; an event's are derived below)
            if isinstance(item, AudioItem):
                if item.reply.interrupted:
                    continue
                if item.reply.first_sent is None:
                    item.reply.first_sent = now
                event = item.event
                self.last_audio = item.event.audio_event.event_id
                record.audio_event_ids.append(self.last_audio)
            elif isinstance(item, InterruptMarker):
                cut = self.last_audio if item.event_id is None else item.event_id
                event = Interruption(interruption_event=InterruptionBody(event_id=cut))
                record.interruptions.append(cut)
            elif isinstance(item, Malformed):
                text, kind, event_id = item.text, "raw" if item.kind == RAW else f"malformed:{item.kind}", None
            else:
                event = item
            if event is not None:
                text, kind, event_id = codec.encode(event), str(event.__struct_config__.tag), _event_id(event)
            if kind == "ping" and event_id is not None:
                self.ping_sent[event_id] = now
            try:
                await ws.send_message(text)
            except ConnectionClosed as exc:
                closed_by_peer(exc)
                return
            record.sent_types.append(kind)
            record.sent.append((kind, event_id))
            changes.notify()


def _event_id(event: ServerEvent) -> int | None:
    """The event id an event carries, if any."""
    for name in event.__struct_fields__:
        body = getattr(event, name)
        event_id = getattr(body, "event_id", None)
        if isinstance(event_id, int):
            return event_id
    return None


def malformed_text(kind: str, event_id: int) -> str:
    """One malformed server event of ``kind``."""
    if kind == "json":
        return '{"type":"audio","audio_event":{"audio_base_64":"AAAA","event_id":'
    if kind == "type":
        return '{"type":"audio","audio_event":{"audio_base_64":"AAAA","event_id":"seven"}}'
    if kind == "base64":
        return '{"type":"audio","audio_event":{"audio_base_64":"%not*base64%","event_id":' + f"{event_id}}}}}"
    return '{"type":"sim_unknown_event","sim_unknown_event":{"event_id":' + f"{event_id}}}}}"

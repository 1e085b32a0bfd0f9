"""JSON text ↔ protocol values: decode what arrives, encode what is sent.

Decoding uses msgspec tagged unions, so a message is parsed once, straight into its
struct, with ``audio_base_64`` decoded to ``bytes`` on the way (no second pass in Python).
Decoding is liberal where the AsyncAPI is loose: a message that does not fit the strict
types is read again with every ``null`` taken as "absent" (ErrorData's
``message``/``error_type``, ``ping_ms``, ``parameters``, …) and whole-valued floats
accepted for integers (``"event_id": 7.0``). ``ping_ms`` is kept as whatever number the
server sent (:meth:`~kioskd.protocol.server_events.PingBody.rtt_ms`), so a ping is
answered whenever its ``event_id`` is readable.

``decode_server_event`` never raises anything but :class:`ProtocolError`; an event
type this client does not decode is an :class:`~kioskd.protocol.server_events.UnknownEvent`
so callers can count and skip it.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from kioskd.protocol.client_messages import ClientMessage, ClientToolResult, TaggedClientMessage, UserAudioChunk
from kioskd.protocol.server_events import SERVER_EVENT_TYPES, ServerEvent, UnknownEvent

__all__ = ["ProtocolError", "decode_client_message", "decode_server_event", "encode", "tool_result_text"]


class ProtocolError(ValueError):
    """A message that is not valid protocol: bad JSON, a wrong field type, bad base64."""


_server_decoder = msgspec.json.Decoder(ServerEvent)
_liberal_server_decoder = msgspec.json.Decoder(ServerEvent, strict=False)
_client_decoder = msgspec.json.Decoder(TaggedClientMessage)
_liberal_client_decoder = msgspec.json.Decoder(TaggedClientMessage, strict=False)
_audio_chunk_decoder = msgspec.json.Decoder(UserAudioChunk)
_envelope_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()

#: Fields whose contents are free-form (kept as sent), and fields where null means something.
_VERBATIM: Final = frozenset({"parameters", "details", "dynamic_variables", "custom_llm_extra_body", "result"})
_NULL_MEANS_SOMETHING: Final = frozenset({"score"})


def _absent_nulls(obj: Any) -> Any:
    """``obj`` with every ``null`` field removed (null = absent), free-form fields untouched."""
    if isinstance(obj, dict):
        return {
            key: value if key in _VERBATIM else _absent_nulls(value)
            for key, value in obj.items()
            if value is not None or key in _NULL_MEANS_SOMETHING
        }
    if isinstance(obj, list):
        return [_absent_nulls(item) for item in obj]
    return obj


def tool_result_text(value: object) -> str:
    """A tool's result as the string the protocol wants (others JSON-encoded, as the JS client does)."""
    if isinstance(value, str):
        return value
    try:
        return _encoder.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return str(value)


def encode(message: ClientMessage | ServerEvent) -> str:
    """The JSON text of ``message``, ready for a WebSocket text frame."""
    if isinstance(message, ClientToolResult):
        # omit_defaults would drop ``is_error: false``; the agent expects the field.
        return _encoder.encode(
            {
                "type": "client_tool_result",
                "tool_call_id": message.tool_call_id,
                "result": message.result,
                "is_error": message.is_error,
            }
        ).decode()
    return _encoder.encode(message).decode()


def _envelope(data: str | bytes) -> dict[str, Any]:
    try:
        obj = _envelope_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    return obj


def decode_server_event(data: str | bytes) -> ServerEvent | UnknownEvent:
    """Parse one server message. Raises only :class:`ProtocolError`."""
    try:
        return _server_decoder.decode(data)
    except msgspec.DecodeError as exc:
        first_error = exc
    # Slow path, only for messages that did not fit: nulls as absent, floats for integers.
    obj = _envelope(data)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("malformed message: no string `type` field")
    if kind not in SERVER_EVENT_TYPES:
        return UnknownEvent(type=kind, raw=obj)
    try:
        return _liberal_server_decoder.decode(_encoder.encode(_absent_nulls(obj)))
    except msgspec.DecodeError:
        raise ProtocolError(f"malformed {kind} event: {first_error}") from None


def decode_client_message(data: str | bytes) -> ClientMessage:
    """Parse one client message (the simulator's side). Raises only :class:`ProtocolError`."""
    obj = _envelope(data)
    try:
        if "type" not in obj and "user_audio_chunk" in obj:
            return _audio_chunk_decoder.decode(data)
        try:
            return _client_decoder.decode(data)
        except msgspec.DecodeError as exc:
            first_error = exc
        try:
            return _liberal_client_decoder.decode(_encoder.encode(_absent_nulls(obj)))
        except msgspec.DecodeError:
            raise first_error from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"invalid client message: {exc}") from None

"""Everything that parses outside input, fed arbitrary input: only the documented errors, never a crash."""

from __future__ import annotations

import tomllib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kioskd.backend.client import SignedUrlError, parse_reply
from kioskd.config import ConfigError, parse_config
from kioskd.conversation import Conversation
from kioskd.ops.control import handle_request
from kioskd.protocol.codec import ProtocolError, decode_server_event
from kioskd.state import Command
from kioskd.tools import ToolRegistry

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
EVENT_TYPES = [
    "audio", "ping", "vad_score", "interruption", "user_transcript", "agent_response",
    "agent_response_correction", "client_tool_call", "contextual_update",
    "internal_tentative_agent_response", "error", "conversation_initiation_metadata", "mystery",
]

#: A public agent, manual trigger, defaults elsewhere.
SESSION_CONFIG = parse_config({"agent": {"agent_id": "agent_test"}, "trigger": {"mode": "manual"}})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_reply_parser_raises_only_signed_url_error_on_bodies(body: bytes | str) -> None:
    raw = body.encode() if isinstance(body, str) else body
    for status in (200, 401, 429, 500):
        try:
            parse_reply(status, raw, {"retry-after": "5"})
        except SignedUrlError:
            pass


@settings(max_examples=300, deadline=None)
@given(
    st.integers(-1000, 1000),
    st.text(max_size=80),
    st.dictionaries(st.sampled_from(["retry-after", "x"]), st.text(max_size=20)),
)
def test_reply_parser_raises_only_signed_url_error_on_urls(status: int, url: str, headers: dict[str, str]) -> None:
    import json

    try:
        parse_reply(status, json.dumps({"signed_url": url}).encode(), headers)
    except SignedUrlError as exc:
        assert len(url) < 12 or url not in str(exc)  # the URL (with its token) is never echoed
    else:
        assert status == 200 and url.startswith(("ws://", "wss://"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["kiosk", "agent", "backend", "audio", "network", "conversation", "x"]),
                       st.dictionaries(st.text(max_size=16), json_values, max_size=4) | json_values, max_size=5))
def test_config_parser_raises_only_config_error(data: dict[str, Any]) -> None:
    try:
        parse_config(data)
    except ConfigError as exc:
        assert exc.problems


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_toml_text_raises_only_toml_or_config_errors(text: str) -> None:
    try:
        parse_config(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ConfigError):
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | st.builds(lambda c: f'{{"cmd": {c}}}'.encode(), st.text(max_size=20).map(repr)))
def test_control_requests_never_raise(line: bytes) -> None:
    sent: list[Command] = []
    answer = handle_request(line, sent.append, lambda: {"state": "idle"})
    assert isinstance(answer, dict) and "ok" in answer
    assert len(sent) <= 1


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EVENT_TYPES), st.dictionaries(st.text(max_size=30), json_values, max_size=4), json_values)
def test_conversation_handles_every_decodable_event(kind: str, body: dict[str, Any], extra: Any) -> None:
    """Whatever decode_server_event accepts, the conversation handles without raising, in any phase."""
    import json

    payload = {"type": kind, f"{kind}_event": body, "extra": extra}
    for key, value in body.items():
        payload.setdefault(key, value)
    try:
        event = decode_server_event(json.dumps(payload))
    except ProtocolError:
        return
    opening = Conversation(SESSION_CONFIG, ToolRegistry.from_config(SESSION_CONFIG))
    opening.connected(0.0)
    opened = Conversation(SESSION_CONFIG, ToolRegistry.from_config(SESSION_CONFIG))
    opened.connected(0.0)
    opened.receive(decode_server_event(json.dumps(METADATA)), 0.1)
    for conversation in (opening, opened):
        actions = conversation.receive(event, 0.2)
        assert isinstance(actions, list)
        conversation.tick(0.3)


#: What the agent sends first.
METADATA = {"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {
    "conversation_id": "conv_1", "agent_output_audio_format": "pcm_16000", "user_input_audio_format": "pcm_16000"}}

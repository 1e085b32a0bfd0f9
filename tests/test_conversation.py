"""The conversation state machine, fed values: events and exact times in, actions out.

No sockets, no threads, no Trio loop (h11-style tests).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from kioskd.actions import Action, End, Interrupt, OpenAudio, Play, Send, SessionOutcome, Show, StopMic
from kioskd.audio.formats import AudioFormat
from kioskd.close_codes import CLOSE_CODES, describe_close
from kioskd.config import Config, parse_config
from kioskd.conversation import DRAIN_LIMIT, GOODBYE_QUIET, Conversation, Phase
from kioskd.overrides import client_data
from kioskd.protocol.client_messages import ClientToolResult, ConversationConfigOverride, Pong
from kioskd.protocol.codec import ProtocolError, decode_server_event
from kioskd.protocol.common import ContextualUpdate
from kioskd.protocol.server_events import ServerEvent, UnknownEvent
from kioskd.state import KioskState
from kioskd.tools import ToolRegistry

IDLE, LONGEST, STALL = 5.0, 12.0, 3.0


def make_config(**conversation: Any) -> Config:
    return parse_config({
        "kiosk": {"id": "k1", "location": "hall"},
        "agent": {"agent_id": "a", "dynamic_variables": {"floor": 2}},
        "trigger": {"mode": "manual"},
        "conversation": {"idle_timeout": IDLE, "max_duration": LONGEST, "context_lines": 3, **conversation},
        "network": {"stall_timeout": STALL, "ws_ping_interval": 1.0},
        "tools": {"static": {"opening_hours": "9 to 5"}},
    })


CONFIG = make_config()
PCM = AudioFormat.parse("pcm_16000")
SHOW_OPEN = Show({"state": KioskState.CONVERSATION, "reason": "", "conversation_id": "conv_1"})


def event(kind: str, **fields: Any) -> ServerEvent | UnknownEvent:
    """A server event as it arrives on the wire."""
    return decode_server_event(json.dumps({"type": kind, **fields}))


def metadata(cid: str = "conv_1", up: str = "pcm_16000", down: str = "pcm_16000") -> ServerEvent | UnknownEvent:
    return event("conversation_initiation_metadata", conversation_initiation_metadata_event={
        "conversation_id": cid, "user_input_audio_format": up, "agent_output_audio_format": down})


def new(config: Config = CONFIG, context: str | None = None) -> Conversation:
    return Conversation(config, ToolRegistry.from_config(config), context=context)


def opened(config: Config = CONFIG, context: str | None = None) -> Conversation:
    """A conversation whose link came up at 0 and whose metadata arrived at 0."""
    conv = new(config, context)
    conv.connected(0.0)
    conv.receive(metadata(), 0.0)
    return conv


# ------------------------------------------------------------------ opening


def test_connected_introduces_the_kiosk_first() -> None:
    conv = new()
    assert conv.phase is Phase.CONNECTING
    assert conv.connected(0.0) == [Send(client_data(CONFIG))]
    assert conv.phase is Phase.OPENING


def test_client_data_carries_identity_and_overrides_only_when_set() -> None:
    data = client_data(CONFIG)
    assert data.dynamic_variables == {"kiosk_id": "k1", "kiosk_location": "hall", "floor": 2}
    assert data.conversation_config_override is None
    config = parse_config({"agent": {"agent_id": "a", "first_message": "Hi", "voice_id": "v"}})
    override = client_data(config).conversation_config_override
    assert isinstance(override, ConversationConfigOverride)
    assert override.agent is not None and override.agent.first_message == "Hi" and override.agent.prompt is None
    assert override.tts is not None and override.tts.voice_id == "v"


@pytest.mark.parametrize(("context", "expected"), [
    (None, [OpenAudio(PCM, PCM), SHOW_OPEN]),
    ("so far: hello", [OpenAudio(PCM, PCM), SHOW_OPEN, Send(ContextualUpdate(text="so far: hello"))]),
])
def test_metadata_opens_audio_and_tells_a_resumed_agent_the_context(
    context: str | None, expected: list[object]
) -> None:
    conv = new(context=context)
    conv.connected(0.0)
    assert conv.receive(metadata(), 0.5) == expected
    assert (conv.phase, conv.conversation_id) == (Phase.OPEN, "conv_1")


def test_unknown_formats_fall_back_to_pcm_16000_and_repeats_are_ignored() -> None:
    conv = new()
    conv.connected(0.0)
    ulaw = AudioFormat.parse("ulaw_8000")
    assert conv.receive(metadata(up="opus_48000", down="ulaw_8000"), 0.1)[0] == OpenAudio(PCM, ulaw)
    assert conv.receive(metadata(cid="conv_2"), 0.2) == []
    assert conv.conversation_id == "conv_1"


def test_metadata_without_an_id_still_opens() -> None:
    conv = new()
    conv.connected(0.0)
    conv.receive(metadata(cid=""), 0.1)
    assert conv.conversation_id == "unknown"


# ------------------------------------------------------------------ events in, actions out

TOOL_CALL = "client_tool_call"

OPEN_TABLE: list[tuple[str, ServerEvent | UnknownEvent, list[object]]] = [
    ("ping is answered with its id", event("ping", ping_event={"event_id": 3, "ping_ms": 40}),
     [Send(Pong(event_id=3))]),
    ("audio is played", event("audio", audio_event={"event_id": 5, "audio_base_64": "AAEC"}),
     [Play(5, b"\x00\x01\x02")]),
    ("interruption silences", event("interruption", interruption_event={"event_id": 7}), [Interrupt(7)]),
    ("vad score is shown", event("vad_score", vad_score_event={"vad_score": 0.75}), [Show({"vad_score": 0.75})]),
    ("transcript", event("user_transcript", user_transcription_event={"user_transcript": "hi"}), []),
    ("agent response", event("agent_response", agent_response_event={"agent_response": "hello"}), []),
    ("context update", event("contextual_update", text="x"), []),
    ("draft", event("internal_tentative_agent_response",
                    tentative_agent_response_internal_event={"tentative_agent_response": "hel"}), []),
    ("error event", event("error", error_event={"code": 1, "message": "m", "error_type": "t"}), []),
    ("unknown event", event("mystery", x=1), []),
    ("tool from the registry", event(TOOL_CALL, client_tool_call={"tool_name": "opening_hours", "tool_call_id": "c1"}),
     [Send(ClientToolResult("c1", "9 to 5", False))]),
    ("unknown tool is an error answer", event(TOOL_CALL, client_tool_call={"tool_name": "nope", "tool_call_id": "c2"}),
     [Send(ClientToolResult(
         "c2", "unknown tool 'nope' (this kiosk offers: current_time, end_conversation, kiosk_info, opening_hours)",
         True))]),
]


@pytest.mark.parametrize(("name", "incoming", "expected"), OPEN_TABLE, ids=[row[0] for row in OPEN_TABLE])
def test_open_conversation_answers(name: str, incoming: ServerEvent | UnknownEvent, expected: list[object]) -> None:
    conv = opened()
    assert conv.receive(incoming, 1.0) == expected
    assert conv.phase is Phase.OPEN


@pytest.mark.parametrize("incoming", [
    event("audio", audio_event={"event_id": 5, "audio_base_64": "AAEC"}),
    event("interruption", interruption_event={"event_id": 7}),
])
def test_before_metadata_there_is_no_speaker_to_drive(incoming: ServerEvent | UnknownEvent) -> None:
    conv = new()
    conv.connected(0.0)
    assert conv.receive(incoming, 0.1) == []


def test_counters() -> None:
    conv = opened()
    for incoming in [event("ping", ping_event={"event_id": 1, "ping_ms": 33}),
                     event("audio", audio_event={"event_id": 1, "audio_base_64": ""}),
                     event("interruption", interruption_event={"event_id": 1}),
                     event("mystery"),
                     event(TOOL_CALL, client_tool_call={"tool_name": "kiosk_info", "tool_call_id": "c"})]:
        conv.receive(incoming, 1.0)
    conv.malformed(ProtocolError("bad json"), 1.0)
    s = conv.stats
    assert (s.pings, s.last_ping_ms, s.audio_events, s.interruptions, s.unknown, s.tool_calls, s.malformed) == (
        1, 33, 1, 1, 1, 1, 1)


def test_transcript_keeps_the_latest_lines_and_applies_corrections() -> None:
    conv = opened()
    conv.receive(event("user_transcript", user_transcription_event={"user_transcript": "where is the cafe"}), 1.0)
    conv.receive(event("agent_response", agent_response_event={"agent_response": "Upstairs, left."}), 1.1)
    conv.receive(event("agent_response_correction", agent_response_correction_event={
        "original_agent_response": "Upstairs, left.", "corrected_agent_response": "Upstairs."}), 1.2)
    assert conv.transcript == ["Visitor: where is the cafe", "Agent: Upstairs."]
    for i in range(3):
        conv.receive(event("user_transcript", user_transcription_event={"user_transcript": f"q{i}"}), 2.0)
    assert conv.transcript == ["Visitor: q0", "Visitor: q1", "Visitor: q2"]  # context_lines = 3


# ------------------------------------------------------------------ watchdogs, exact times

IDLE_END = End(SessionOutcome(f"no speech from visitor or agent for {IDLE:g} s"))
STALL_END = End(SessionOutcome(f"link stalled: nothing heard for {STALL:g} s", resumable=True), 1001, 0.0)
LONGEST_END = End(SessionOutcome(f"maximum length of {LONGEST:g} s reached"))
VISITOR = event("user_transcript", user_transcription_event={"user_transcript": "hm"})
LOUD = event("vad_score", vad_score_event={"vad_score": 0.5})
QUIET = event("vad_score", vad_score_event={"vad_score": 0.49})

#: (name, [(time, what)], the first time an End comes, that End). ``what``: "heard", "speaking",
#: or a server event. The conversation ticks every 0.25 s and at each listed time.
TIMER_TABLE: list[tuple[str, Sequence[tuple[float, object]], float, End]] = [
    ("nothing heard: stalled", [], STALL, STALL_END),
    ("pongs keep the link alive; idle then ends it", [(2.0, "heard"), (4.0, "heard")], IDLE, IDLE_END),
    ("any message counts as heard", [(2.0, QUIET), (4.0, QUIET)], IDLE, IDLE_END),
    ("the visitor speaking restarts the idle timer", [(2.0, "heard"), (4.0, VISITOR), (6.0, "heard"),
                                                      (8.0, "heard")], 9.0, IDLE_END),
    ("a loud vad score is activity", [(2.0, "heard"), (3.0, LOUD), (5.0, "heard"), (7.0, "heard")], 8.0, IDLE_END),
    ("agent audio playing is activity", [(2.0, "heard"), (3.5, "heard"), (4.0, "speaking"), (6.0, "heard"),
                                         (8.0, "heard")],
     9.0, IDLE_END),
    ("a lively conversation ends at the maximum length",
     [(t, VISITOR) for t in (2.0, 4.0, 6.0, 8.0, 10.0)] + [(11.5, VISITOR)], LONGEST, LONGEST_END),
]


@pytest.mark.parametrize(("name", "script", "ends_at", "end"), TIMER_TABLE, ids=[row[0] for row in TIMER_TABLE])
def test_watchdogs(name: str, script: list[tuple[float, object]], ends_at: float, end: End) -> None:
    conv = opened()
    steps = dict(script)
    times = sorted({round(0.25 * i, 2) for i in range(1, 60)} | set(steps) | {ends_at})
    for now in times:
        what = steps.get(now)
        if what == "heard":
            conv.heard(now)
        elif what is not None and what != "speaking":
            conv.receive(what, now)  # type: ignore[arg-type]
        actions = conv.tick(now, speaking=what == "speaking")
        if now < ends_at:
            assert actions == [], now
            assert conv.deadline > now
        else:
            assert actions == [end]
            assert conv.phase is Phase.ENDED
            assert conv.tick(now + 1) == []  # ends once
            return
    raise AssertionError("never ended")


def test_deadline_is_the_earliest_watchdog() -> None:
    conv = opened()
    assert conv.deadline == STALL
    conv.heard(2.5)
    assert conv.deadline == IDLE  # idle 5.0 < stall 5.5
    conv.receive(VISITOR, 4.0)
    assert conv.deadline == 4.0 + STALL


# ------------------------------------------------------------------ ending

TOOL_END = SessionOutcome("the agent ended the conversation (end_conversation tool)")
END_TOOL = event(TOOL_CALL, client_tool_call={"tool_name": "end_conversation", "tool_call_id": "e1"})


def test_end_conversation_tool_waits_for_the_goodbye_to_play() -> None:
    conv = opened(make_config(idle_timeout=100.0, max_duration=100.0))
    assert conv.receive(END_TOOL, 1.0) == [Send(ClientToolResult("e1", "ending the conversation", False)), StopMic()]
    assert conv.phase is Phase.DRAINING
    start = 1.0 + GOODBYE_QUIET
    assert conv.deadline == start
    assert conv.tick(start - 0.01) == []  # the goodbye may still start arriving
    assert conv.tick(start, speaking=True) == []
    conv.heard(2.0)
    assert conv.tick(2.0, speaking=True) == []
    assert conv.tick(2.5) == [End(TOOL_END)]


def test_end_conversation_drain_is_bounded() -> None:
    conv = opened(make_config(idle_timeout=100.0, max_duration=100.0))
    conv.receive(END_TOOL, 1.0)
    limit = 1.0 + DRAIN_LIMIT
    now = 1.0
    while now < limit - 1:
        now += 1.0
        conv.heard(now)
        assert conv.tick(now, speaking=True) == []
    conv.heard(limit)
    assert conv.tick(limit, speaking=True) == [End(TOOL_END)]


def test_agent_close_1000_drains_without_a_stall_check() -> None:
    conv = opened(make_config(idle_timeout=100.0, max_duration=100.0))
    assert conv.closed(1000, 1.0) == []
    assert conv.phase is Phase.DRAINING
    assert conv.tick(1.0 + 2 * STALL, speaking=True) == []  # the link is gone: no stall
    assert conv.tick(1.0 + 2 * STALL + 0.1) == [End(SessionOutcome(CLOSE_CODES[1000][0], close_code=1000))]


@pytest.mark.parametrize(("code", "resumable", "rejected"), [
    (1000, False, False), (1001, True, False), (1002, False, False), (None, True, False), (1008, False, True),
    (1011, True, False), (4001, False, False), (3999, False, False),
])
def test_agent_close_codes(code: int | None, resumable: bool, rejected: bool) -> None:
    conv = new()
    conv.connected(0.0)  # not open yet: even a 1000 has nothing to drain
    meaning, _ = describe_close(code)
    assert conv.closed(code, 1.0) == [
        End(SessionOutcome(meaning, resumable=resumable, rejected=rejected, close_code=code))
    ]


def test_describe_close() -> None:
    assert describe_close(None) == ("the connection dropped without a close frame", True)
    assert describe_close(4001) == ("the agent closed it with application code 4001", False)
    assert describe_close(3999) == ("closed with code 3999", False)
    assert describe_close(1013) == ("the agent server asked to try again later", True)


def test_end_while_connecting_sends_nothing() -> None:
    conv = new()
    assert conv.end() == [End(SessionOutcome("ended by request"))]
    assert conv.connected(0.5) == []
    assert conv.end("again") == []
    assert conv.result() == SessionOutcome("ended by request")


def test_events_after_the_end_are_ignored_and_the_first_end_wins() -> None:
    conv = opened()
    conv.receive(VISITOR, 1.0)
    assert conv.end("ended by the visitor") == [End(SessionOutcome("ended by the visitor"))]
    assert conv.receive(event("ping", ping_event={"event_id": 1}), 1.1) == []
    assert conv.closed(1011, 1.2) == []
    assert conv.tick(100.0) == []
    assert conv.result() == SessionOutcome(
        "ended by the visitor", conversation_id="conv_1", opened=True, transcript=["Visitor: hm"]
    )


# ------------------------------------------------------------------ the real service's defaults (issue 12)

TENTATIVE = event(
    "tentative_user_transcript", tentative_user_transcription_event={"user_transcript": "wh", "event_id": 2}
)


def run_script(conv: Conversation, script: dict[float, object], until: float) -> tuple[float, list[Action]] | None:
    """Tick every 0.25 s (and at each scripted time); the first actions with an End, and when."""
    times = sorted({round(0.25 * i, 2) for i in range(1, int(until * 4) + 1)} | set(script))
    for now in times:
        what = script.get(now)
        if what == "heard":
            conv.heard(now)
        elif isinstance(what, tuple):  # ("talking",) or ("speaking",)
            pass
        elif what is not None:
            conv.heard(now)
            conv.receive(what, now)  # type: ignore[arg-type]
        actions = conv.tick(now, speaking=what == ("speaking",), visitor_at=now if what == ("talking",) else None)
        if any(isinstance(a, End) for a in actions):
            return now, actions
    return None


def test_a_visitor_talking_longer_than_the_idle_timeout_is_never_cut_off() -> None:
    """The service's default events carry no vad_score: the kiosk's own VAD keeps the conversation."""
    conv = opened(make_config(max_duration=100.0))
    script: dict[float, object] = {round(t * 0.25, 2): ("talking",) for t in range(4, 4 * 30)}  # 1 s … 30 s
    script.update({float(t): "heard" for t in range(1, 40)})  # pongs: the link is alive
    ended = run_script(conv, script, 40.0)
    assert ended is not None and ended[0] == 29.75 + IDLE  # idle counts from the last speech heard
    assert ended[1] == [IDLE_END]


def test_tentative_transcripts_count_as_the_visitor_talking() -> None:
    conv = opened(make_config(max_duration=100.0))
    script: dict[float, object] = {float(t): "heard" for t in range(1, 30)}
    script.update({float(t): TENTATIVE for t in range(2, 15, 2)})  # every 2 s until 14 s
    ended = run_script(conv, script, 30.0)
    assert ended is not None and ended[0] == 14.0 + IDLE


def test_the_light_follows_the_local_vad_until_the_agent_sends_vad_score() -> None:
    conv = opened()
    assert conv.tick(0.5, voice_level=0.3) == [Show({"vad_score": 0.3})]
    assert conv.tick(0.55, voice_level=0.3) == []  # unchanged: nothing to show
    assert conv.tick(0.6, voice_level=0.8) == [Show({"vad_score": 0.8})]
    assert conv.receive(event("vad_score", vad_score_event={"vad_score": 0.1}), 0.7) == [Show({"vad_score": 0.1})]
    assert conv.tick(0.8, voice_level=0.9) == []  # the agent's score wins from now on


def test_client_data_names_the_kiosk_and_asks_for_client_events_only_when_set() -> None:
    data = client_data(CONFIG)
    assert data.user_id == "k1"
    assert data.source_info is not None and data.source_info.source == "kioskd"
    assert data.conversation_config_override is None
    config = parse_config({"agent": {"agent_id": "a", "client_events": ["audio", "interruption", "vad_score"]}})
    override = client_data(config).conversation_config_override
    assert override is not None and override.conversation is not None
    assert override.conversation.client_events == ["audio", "interruption", "vad_score"]
    assert override.conversation.text_only is None and override.agent is None


def test_config_names_unknown_client_events() -> None:
    from kioskd.config import ConfigError

    with pytest.raises(ConfigError) as bad:
        parse_config({"agent": {"agent_id": "a", "client_events": ["audio", "vad_scores"]}})
    assert bad.value.problems == ["agent.client_events: unknown event types 'vad_scores' (see the AsyncAPI's "
                                  "ClientEvent list, e.g. audio, interruption, vad_score, agent_tool_response)"]
    with pytest.raises(ConfigError, match="must include 'audio'"):
        parse_config({"agent": {"agent_id": "a", "client_events": ["vad_score"]}})


END_CALL_EVENT = event("agent_tool_response", agent_tool_response={
    "tool_name": "end_call", "tool_call_id": "t9", "tool_type": "system", "is_error": False, "is_called": True,
    "event_id": 4})
GOODBYE_AUDIO = event("audio", audio_event={"event_id": 4, "audio_base_64": "AAAA"})
END_CALL_END = End(SessionOutcome("the agent ended the call (end_call)"))

#: (name, [(time, what)], when the End comes). The goodbye's audio arrives 1.0–1.4 s and plays
#: until ``speaking`` stops; end_call comes before, during or after it.
END_CALL_TABLE: list[tuple[str, list[tuple[float, object]], float]] = [
    ("end_call before the goodbye", [(0.75, END_CALL_EVENT), (1.0, GOODBYE_AUDIO), (1.25, GOODBYE_AUDIO),
                                     (1.5, ("speaking",)), (1.75, ("speaking",)), (2.0, ("speaking",))], 2.25),
    ("end_call during the goodbye", [(1.0, GOODBYE_AUDIO), (1.25, END_CALL_EVENT), (1.5, GOODBYE_AUDIO),
                                     (1.75, ("speaking",)), (2.0, ("speaking",)), (2.25, ("speaking",))], 2.5),
    ("end_call after the goodbye arrived", [(1.0, GOODBYE_AUDIO), (1.25, GOODBYE_AUDIO), (1.5, END_CALL_EVENT),
                                            (1.75, ("speaking",)), (2.0, ("speaking",))], 2.25),
    ("end_call after the goodbye played", [(1.0, GOODBYE_AUDIO), (1.25, ("speaking",)), (3.0, END_CALL_EVENT)], 3.5),
    ("end_call with nothing to say", [(1.0, END_CALL_EVENT)], 1.5),
]


@pytest.mark.parametrize(("name", "script", "ends_at"), END_CALL_TABLE, ids=[row[0] for row in END_CALL_TABLE])
def test_end_call_ends_after_the_goodbye_has_played(
    name: str, script: list[tuple[float, object]], ends_at: float
) -> None:
    conv = opened(make_config(idle_timeout=100.0, max_duration=100.0))
    steps = dict(script)
    (end_call_at,) = [t for t, what in script if what is END_CALL_EVENT]
    for now in sorted({round(0.25 * i, 2) for i in range(1, 24)} | set(steps)):
        what = steps.get(now)
        actions: list[object] = []
        if what is not None and not isinstance(what, tuple):
            actions += conv.receive(what, now)  # type: ignore[arg-type]
        if now == end_call_at:
            assert actions == [StopMic()], "the microphone stops when end_call arrives"
        conv.heard(now)
        actions += conv.tick(now, speaking=what == ("speaking",))
        if now < ends_at:
            assert not any(isinstance(a, End) for a in actions), now
        else:
            assert actions == [END_CALL_END]
            last_audio = max([t for t, w in script if w is GOODBYE_AUDIO or w == ("speaking",)], default=0.0)
            assert now - max(last_audio, end_call_at) <= 1.0, "closes within 1 s of the last audio (or of end_call)"
            return
    raise AssertionError("never ended")


def test_end_call_full_payload_and_a_1000_close_during_the_goodbye_still_let_it_play() -> None:
    conv = opened(make_config(idle_timeout=100.0, max_duration=100.0))
    full = event("agent_tool_response_full_payload", agent_tool_response_full_payload={
        "tool_name": "end_call", "tool_call_id": "t", "tool_type": "system", "is_error": False, "is_called": True,
        "event_id": 4, "full_tool_result": ""})
    conv.receive(GOODBYE_AUDIO, 1.0)
    assert conv.receive(full, 1.0) == [StopMic()]
    assert conv.closed(1000, 1.1, "bye") == []  # the agent's close does not cut the goodbye
    assert conv.tick(1.5, speaking=True) == []
    assert conv.tick(1.6) == [END_CALL_END]


def test_other_agent_tools_do_not_end_it() -> None:
    conv = opened()
    other = event("agent_tool_response", agent_tool_response={
        "tool_name": "transfer_to_number", "tool_call_id": "t", "tool_type": "system", "is_error": False,
        "is_called": True, "event_id": 4})
    assert conv.receive(other, 1.0) == [] and conv.phase is Phase.OPEN


REFUSAL = event("error", error_event={
    "code": 1008, "message": "Override for field 'client_events' is not allowed by config.",
    "error_type": "override_error", "reason": None, "debug_message": None, "details": None})


def test_a_refused_override_is_explained_in_words() -> None:
    config = parse_config({"agent": {"agent_id": "a", "first_message": "Hi", "client_events": ["audio", "vad_score"]}})
    conv = new(config)
    conv.connected(0.0)
    conv.receive(REFUSAL, 0.1)
    (end,) = conv.closed(1008, 0.2, "Override for field 'client_events' is not allowed by config.")
    assert isinstance(end, End) and end.outcome.rejected
    assert end.outcome.reason == (
        "the agent refused this kiosk's override of conversation.client_events (code 1008 override_error: Override "
        "for field 'client_events' is not allowed by config.): allow it in the agent's security settings "
        "(overrides) or remove it from [agent] in config.toml")


@pytest.mark.parametrize(("error", "reason", "words"), [
    (None, "", CLOSE_CODES[1002][0]),
    (None, "no user audio received", CLOSE_CODES[1002][0] + " (close reason: 'no user audio received')"),
    ({"code": 1002}, None, CLOSE_CODES[1002][0] + "; the agent's error: code 1002"),
    ({"code": 1002, "message": None, "error_type": "transport_receive_timeout", "reason": "timeout",
      "debug_message": "no input for 60 s"}, "no user audio received",
     CLOSE_CODES[1002][0] + " (close reason: 'no user audio received'); the agent's error: code 1002 "
     "transport_receive_timeout: timeout (debug: no input for 60 s)"),
])
def test_errors_and_close_reasons_in_words(error: dict[str, Any] | None, reason: str | None, words: str) -> None:
    conv = opened()
    if error is not None:
        assert conv.receive(event("error", error_event=error), 1.0) == []
    (end,) = conv.closed(1002, 1.5, reason)
    assert isinstance(end, End) and end.outcome.reason == words


def test_tool_calls_with_null_parameters_are_answered_and_results_are_strings() -> None:
    def info(params: Any) -> Any:
        return {"floor": 2, "params": dict(params)}

    conv = Conversation(CONFIG, ToolRegistry({"info": info}))
    conv.connected(0.0)
    conv.receive(metadata(), 0.0)
    call = event(TOOL_CALL, client_tool_call={"tool_name": "info", "tool_call_id": "c1", "parameters": None})
    assert conv.receive(call, 1.0) == [Send(ClientToolResult("c1", '{"floor":2,"params":{}}', False))]
    missing = event(TOOL_CALL, client_tool_call={"tool_name": "gone", "tool_call_id": "c2"})
    (answer,) = conv.receive(missing, 1.0)
    assert isinstance(answer, Send) and isinstance(answer.message, ClientToolResult) and answer.message.is_error


def test_events_a_kiosk_does_not_use_are_counted_by_type() -> None:
    conv = opened()
    for kind in ("context_usage", "internal_turn_probability", "context_usage", "brand_new"):
        assert conv.receive(event(kind, x=1), 1.0) == []
    assert conv.stats.unknown == 4
    assert conv.stats.unknown_types == {"context_usage": 2, "internal_turn_probability": 1, "brand_new": 1}


def test_visitor_messages() -> None:
    from kioskd.conversation import NotNow
    from kioskd.protocol.client_messages import Feedback, UserActivity, UserMessage

    conv = new()
    with pytest.raises(NotNow, match="no conversation is open"):
        conv.visitor_message("say", "hi")
    conv.connected(0.0)
    conv.receive(metadata(), 0.0)
    with pytest.raises(NotNow, match="anything to rate"):
        conv.visitor_message("feedback", "like")
    conv.receive(event("agent_response", agent_response_event={"agent_response": "Hello", "event_id": 3}), 1.0)
    assert conv.visitor_message("feedback", "like") == [Send(Feedback(event_id=3, score="like"))]
    conv.receive(event("audio", audio_event={"event_id": 5, "audio_base_64": "AAAA"}), 2.0)
    assert conv.visitor_message("feedback", "dislike") == [Send(Feedback(event_id=5, score="dislike"))]
    with pytest.raises(NotNow, match="like or dislike"):
        conv.visitor_message("feedback", "meh")
    assert conv.visitor_message("say", "Where is the exit?") == [Send(UserMessage(text="Where is the exit?"))]
    assert conv.transcript[-1] == "Visitor: Where is the exit?"
    assert conv.visitor_message("context", "the door opened") == [Send(ContextualUpdate(text="the door opened"))]
    assert conv.visitor_message("activity") == [Send(UserActivity())]
    with pytest.raises(NotNow, match="needs some text"):
        conv.visitor_message("say", "  ")

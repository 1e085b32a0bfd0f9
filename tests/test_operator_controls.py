"""The operator's kiosk: event stream (ctl watch), hooks, live controls, opening hours, privacy, sound cues."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing

from kiosk_harness import kiosk_config, read_wav, running_kiosk
from kioskd.audio.cues import TONES, default_path, load_cues, read_sound, synthesise
from kioskd.audio.engine import AudioEngine
from kioskd.config import AudioConfig, CuesConfig, HoursConfig
from kioskd.events import EventBus
from kioskd.hardware.leds import LightState, light_state
from kioskd.ops.controls import CLOSED_BY_HOURS, CLOSED_BY_OPERATOR, LiveControls, is_open
from kioskd.simulator import SimulatorConfig, open_simulator
from kioskd.state import KioskState

TIMEOUT = 60
TRANSCRIPT = "Where is the cloakroom, please?"
REPLY = "The cloakroom is on your left."


def sim_config() -> SimulatorConfig:
    """An agent that waits for the visitor (no greeting): its first words answer the visitor's."""
    return SimulatorConfig(transcripts=(TRANSCRIPT,), replies=(REPLY,), tool_call=None, first_message="")


# --------------------------------------------------------------------------- event bus


async def test_event_bus_gives_each_subscriber_every_event_and_never_blocks() -> None:
    bus = EventBus(clock=lambda: 100.0)
    with bus.subscribe(maxlen=2) as slow, bus.subscribe() as fast:
        for i in range(5):
            bus.publish("state", state="idle", reason=str(i))
        got = [await fast.receive() for _ in range(5)]
        first_two = [await slow.receive() for _ in range(2)]
        dropped = await slow.receive()
    assert [e["reason"] for e in got] == ["0", "1", "2", "3", "4"]
    assert got[0] == {"type": "state", "time": 100.0, "seq": 1, "state": "idle", "reason": "0"}
    assert [e["reason"] for e in first_two] == ["0", "1"]
    assert dropped == {"type": "dropped", "time": dropped["time"], "count": 3}  # told, not silent
    assert bus.subscribers == 0
    with pytest.raises(ValueError, match="unknown event type 'stat'"):
        bus.publish("stat")


# --------------------------------------------------------------------------- ctl watch


async def test_ctl_watch_streams_a_conversation(tmp_path: Path) -> None:
    async with open_simulator(sim_config()) as sim:
        config = kiosk_config(sim, tmp_path)
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.wait_state(KioskState.IDLE)
                proc = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "kioskd", "ctl", "--socket", k.socket, "watch"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                )
                assert proc.stdout is not None
                while k.kiosk.events.subscribers == 0:
                    await trio.sleep(0.02)
                with k.kiosk.events.subscribe() as mine:
                    reply = await k.ctl("start")
                    await _next(mine, "agent_said")
                await k.ctl("end")
                await k.wait_state(KioskState.IDLE)
                await trio.sleep(0.1)
                proc.send_signal(signal.SIGINT)  # Ctrl-C
                out = b""
                while chunk := await proc.stdout.receive_some(65536):
                    out += chunk
                code = await proc.wait()
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert code == 0
    types = [e["type"] for e in events]
    assert reply["ok"] and types[0] == "state" and events[0]["state"] == "connecting"
    started = next(e for e in events if e["type"] == "conversation_started")
    assert started["id"] == "conv_sim_1" and started["resumed"] is False
    said = [(e["type"], e["text"]) for e in events if e["type"] in ("visitor_said", "agent_said")]
    assert said[:2] == [("visitor_said", TRANSCRIPT), ("agent_said", REPLY)]
    ended = next(e for e in events if e["type"] == "conversation_ended")
    assert ended == {**ended, "id": "conv_sim_1", "reason": "ended by the visitor or operator"}
    assert [e["state"] for e in events if e["type"] == "state"] == ["connecting", "conversation", "idle"]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)


async def test_watch_sees_problems_appear_and_clear(tmp_path: Path) -> None:
    async with open_simulator(SimulatorConfig()) as sim:
        config = kiosk_config(sim, tmp_path, backend={"health_interval": 0.2})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.wait_state(KioskState.IDLE)
                with k.kiosk.events.subscribe() as events:
                    sim.backend_faults.set("500")
                    appeared = await _next(events, "problem_appeared")
                    sim.backend_faults.reset()
                    cleared = await _next(events, "problem_cleared")
    problem = "the backend gives no conversation URLs: server: the backend failed (HTTP 500)"
    assert appeared["problem"] == cleared["problem"] == problem
    assert f'msg="problem cleared: {problem}"' in k.log.getvalue()


async def _next(events: object, kind: str) -> dict[str, object]:
    async for event in events:  # type: ignore[attr-defined]
        if event["type"] == kind:
            return event  # type: ignore[no-any-return]
    raise AssertionError(f"no {kind} event")


# --------------------------------------------------------------------------- hooks


async def test_hooks_get_the_event_on_stdin_and_are_time_limited(tmp_path: Path) -> None:
    seen = tmp_path / "seen.jsonl"
    record = ["/bin/sh", "-c", f"cat >> {seen}"]
    stuck = ["/bin/sleep", "60"]
    async with open_simulator(sim_config()) as sim:
        config = kiosk_config(sim, tmp_path, hooks={"timeout": 3.0, "on": {
            "conversation_started": record, "conversation_ended": record, "state": stuck}})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.wait_state(KioskState.IDLE)
                started_at = trio.current_time()
                reply = await k.ctl("start")
                assert trio.current_time() - started_at < 3.0  # the stuck state hooks never held the kiosk up
                await k.ctl("end")
                await k.wait_state(KioskState.IDLE)
                hooks = k.kiosk.hooks

                def kinds() -> list[str]:
                    return [kind for kind, _ in hooks.finished]

                while kinds().count("state") < 1 or len(kinds()) - kinds().count("state") < 2:
                    await trio.sleep(0.05)
    # the two hooks run at the same time, so their lines may land in either order: "seq" orders them
    events = sorted((json.loads(line) for line in seen.read_text().splitlines()), key=lambda e: e["seq"])
    assert reply["ok"]
    assert [e["type"] for e in events] == ["conversation_started", "conversation_ended"]
    assert events[0]["id"] == "conv_sim_1"
    finished = k.kiosk.hooks.finished
    assert [code for kind, code in finished if kind != "state"] == [0, 0]  # both hooks exited 0
    killed = [code for kind, code in finished if kind == "state"]
    assert killed and all(code is None for code in killed)  # killed at the time limit
    assert 'msg="hook killed after 3 s" event=state' in k.log.getvalue()


# --------------------------------------------------------------------------- live controls


async def test_volume_mute_close_open_apply_at_once_and_survive_a_restart(tmp_path: Path) -> None:
    async with open_simulator(SimulatorConfig()) as sim:
        config = kiosk_config(sim, tmp_path)
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.wait_state(KioskState.IDLE)
                volume = await k.ctl("volume", value=0.25)
                assert k.kiosk.audio.volume == 0.25
                bad = await k.ctl("volume", value=1.5)
                muted = await k.ctl("mute")
                assert k.kiosk.audio.muted
                closed = await k.ctl("close")
                await k.wait_state(KioskState.CLOSED)
                assert light_state(k.kiosk.board.status) is LightState.CLOSED  # the light says closed
                refused = await k.ctl("start")
                status = await k.ctl("status")
            # a restart: the same state file
            async with running_kiosk(config) as k2:
                await k2.wait_state(KioskState.CLOSED)
                restored = (k2.kiosk.audio.volume, k2.kiosk.audio.muted)
                opened = await k2.ctl("open")
                await k2.wait_state(KioskState.IDLE)
                unmuted = await k2.ctl("unmute")
                started = await k2.ctl("start")
    assert volume == {"ok": True, "volume": 0.25, "muted": False, "closed": False, "closed_reason": None}
    assert bad == {"ok": False, "error": 'volume needs "value": a number from 0.0 to 1.0'}
    assert muted["muted"] is True
    assert closed["closed"] is True and closed["closed_reason"] == CLOSED_BY_OPERATOR
    assert refused == {"ok": False, "error": f"the kiosk is closed: {CLOSED_BY_OPERATOR}"}
    assert status["state"] == "closed" and status["controls"]["closed"] is True
    assert restored == (0.25, True)
    assert opened["closed"] is False and unmuted["muted"] is False
    assert started["ok"], started
    assert json.loads((tmp_path / "state.json").read_text()) == {"volume": 0.25, "muted": False, "closed": False}


async def test_ctl_volume_command_line(tmp_path: Path) -> None:
    async with open_simulator(SimulatorConfig()) as sim:
        config = kiosk_config(sim, tmp_path)
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.wait_state(KioskState.IDLE)
                ok = await trio.run_process([sys.executable, "-m", "kioskd", "ctl", "--socket", k.socket,
                                             "volume", "0.6"], capture_stdout=True, capture_stderr=True)
                missing = await trio.run_process([sys.executable, "-m", "kioskd", "ctl", "--socket", k.socket,
                                                  "volume"], capture_stderr=True, check=False)
                volume = k.kiosk.audio.volume
    assert json.loads(ok.stdout)["volume"] == 0.6 and volume == 0.6
    assert missing.returncode == 2 and b"volume needs a value 0.0-1.0" in missing.stderr


def test_a_broken_state_file_falls_back_to_the_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    applied: list[tuple[float, bool, str | None]] = []
    controls = LiveControls(str(path), 0.8, HoursConfig(), EventBus(),
                            lambda s, closed: applied.append((s.volume, s.muted, closed)))
    controls.refresh()
    assert applied == [(0.8, False, None)]
    assert "state file unusable" in caplog.text


@pytest.mark.parametrize(
    ("hours", "when", "expected"),
    [
        (HoursConfig(), dt.datetime(2026, 12, 2, 3, 0), True),  # no hours: always open
        (HoursConfig(daily="09:00-17:00"), dt.datetime(2026, 12, 2, 8, 59), False),
        (HoursConfig(daily="09:00-17:00"), dt.datetime(2026, 12, 2, 9, 0), True),
        (HoursConfig(daily="09:00-17:00"), dt.datetime(2026, 12, 2, 17, 0), False),
        (HoursConfig(daily="09:00-12:00, 13:00-17:00"), dt.datetime(2026, 12, 2, 12, 30), False),
        (HoursConfig(daily="09:00-17:00", sun=""), dt.datetime(2026, 12, 6, 10, 0), False),  # a Sunday
        (HoursConfig(daily="09:00-17:00", sat="10:00-14:00"), dt.datetime(2026, 12, 5, 9, 30), False),
        (HoursConfig(daily="09:00-17:00", sat="10:00-14:00"), dt.datetime(2026, 12, 5, 13, 59), True),
        (HoursConfig(daily="22:00-02:00"), dt.datetime(2026, 12, 2, 23, 0), True),  # past midnight
        (HoursConfig(daily="22:00-02:00"), dt.datetime(2026, 12, 3, 1, 59), True),
        (HoursConfig(daily="22:00-02:00"), dt.datetime(2026, 12, 3, 2, 0), False),
        (HoursConfig(mon="09:00-17:00"), dt.datetime(2026, 11, 30, 10, 0), True),  # a Monday; other days closed
        (HoursConfig(mon="09:00-17:00"), dt.datetime(2026, 12, 1, 10, 0), False),
    ],
)
def test_opening_hours(hours: HoursConfig, when: dt.datetime, expected: bool) -> None:
    assert is_open(hours, when) is expected


async def test_the_kiosk_closes_and_opens_by_the_hours(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Virtual time drives the wall clock the hours are read from: closed at 17:00, open at 09:00."""
    origin = dt.datetime(2026, 12, 2, 16, 59, 50)
    start = trio.current_time()
    reasons: list[tuple[float, str | None]] = []
    controls = LiveControls(
        str(tmp_path / "state.json"), 1.0, HoursConfig(daily="09:00-17:00"), EventBus(),
        lambda s, closed: reasons.append((trio.current_time() - start, closed)),
        now=lambda: origin + dt.timedelta(seconds=trio.current_time() - start),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(controls.run)
        await trio.sleep(16 * 3600 + 60)
        nursery.cancel_scope.cancel()
    changes = [(t, r) for (_, before), (t, r) in itertools.pairwise(reasons) if r != before]
    assert reasons[0] == (0.0, None)
    # 17:00:00 is at +10 s, 09:00:00 at +57610 s; the hours are looked at every 30 s
    assert changes == [(30.0, CLOSED_BY_HOURS), (57630.0, None)]


def test_hours_config_is_checked() -> None:
    from kioskd.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as info:
        parse_config({"agent": {"agent_id": "a"}, "hours": {"daily": "9-17", "sat": "25:00-26:00"}})
    assert info.value.problems == [
        "hours.daily: '9-17' is not HH:MM-HH:MM; expected e.g. \"09:00-17:00\" or \"09:00-12:00, 13:00-17:00\"",
        "hours.sat: '25:00-26:00' is not HH:MM-HH:MM; expected e.g. \"09:00-17:00\" or \"09:00-12:00, 13:00-17:00\"",
    ]


# --------------------------------------------------------------------------- privacy


async def test_words_stay_out_of_the_log_unless_transcripts_are_on(tmp_path: Path) -> None:
    logs = {}
    for transcripts in (False, True):
        folder = tmp_path / str(transcripts)
        folder.mkdir()
        async with open_simulator(sim_config()) as sim:
            config = kiosk_config(sim, folder, log={"level": "debug", "transcripts": transcripts})
            with trio.fail_after(TIMEOUT):
                async with running_kiosk(config) as k:
                    await k.wait_state(KioskState.IDLE)
                    with k.kiosk.events.subscribe() as events:
                        await k.ctl("start")
                        await _next(events, "agent_said")
                    await k.ctl("end")
                    await k.wait_state(KioskState.IDLE)
        logs[transcripts] = k.log.getvalue()
    assert TRANSCRIPT not in logs[False] and REPLY not in logs[False] and "cloakroom" not in logs[False]
    assert f'msg="visitor said" id=conv_sim_1 chars={len(TRANSCRIPT)}' in logs[False]
    assert f"text='{TRANSCRIPT}'" in logs[True] and REPLY in logs[True]


async def test_privacy_notice_plays_and_is_shown_before_the_first_turn(tmp_path: Path) -> None:
    notice = tmp_path / "notice.wav"
    samples = (np.sin(np.arange(8000) * 2 * np.pi * 300 / 16000) * 12000).astype(np.int16)  # 0.5 s
    with wave.open(str(notice), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    text = "This kiosk sends your voice to an AI assistant to answer you."
    async with open_simulator(sim_config()) as sim:
        config = kiosk_config(sim, tmp_path, privacy={"notice": str(notice), "notice_text": text},
                              cues={"listening": "", "end": "", "error": ""})
        with trio.fail_after(TIMEOUT):
            async with running_kiosk(config) as k:
                await k.wait_state(KioskState.IDLE)
                with k.kiosk.events.subscribe() as events:
                    reply = await k.ctl("start")
                    await k.ctl("end")
                    await k.wait_state(KioskState.IDLE)
                    seen = []
                    while events._receive.statistics().current_buffer_used:  # what was published
                        seen.append(await events.receive())
    assert reply["ok"]
    kinds = [e["type"] for e in seen]
    assert kinds.index("notice") < kinds.index("conversation_started")
    assert next(e for e in seen if e["type"] == "notice")["text"] == text
    out, _ = read_wav(tmp_path / "out.wav")
    start = int(np.flatnonzero(out)[0])
    assert np.array_equal(
        out[start : start + len(samples) - 1], samples[1:]
    )  # the notice is what the speaker played first


# --------------------------------------------------------------------------- sound cues


def test_shipped_cues_are_small_wavs_made_by_the_generator() -> None:
    for name in TONES:
        path = default_path(name)
        assert path.stat().st_size < 20_000
        assert np.array_equal(read_sound(path), synthesise(name)), name  # regenerate: python -m kioskd.audio.cues
    cues = load_cues(CuesConfig(end="", volume=0.5))
    assert sorted(cues) == ["error", "listening", "reconnecting"]  # "" turns one off
    assert np.abs(cues["listening"]).max() == pytest.approx(np.abs(synthesise("listening")).max() * 0.5, abs=1)


async def test_cue_goes_through_the_speaker_path_with_volume_and_mute(tmp_path: Path) -> None:
    """A cue is mixed in at the speaker: the file device receives it, scaled by the live volume; muted: silence."""
    out = tmp_path / "spk.wav"
    silence = tmp_path / "mic.wav"
    with wave.open(str(silence), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000, np.int16).tobytes())
    engine = AudioEngine(AudioConfig(input=f"wav:{silence}", output=f"wav:{out}", output_rate=16000, echo="off"))
    engine.cues = {"listening": synthesise("listening")}
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            engine.volume = 0.5
            seconds = engine.play_cue("listening")
            assert engine.speaking
            await trio.sleep(seconds + 0.2)
            engine.muted = True
            engine.play_cue("listening")
            await trio.sleep(seconds + 0.2)
            assert engine.play_cue("end") == 0.0  # turned off: nothing plays
            nursery.cancel_scope.cancel()
    written, _ = read_wav(out)
    cue = synthesise("listening")
    expected = np.round(cue * 0.5).astype(np.int16)
    lead = int(np.flatnonzero(expected)[0])  # the cue's first samples round to zero
    start = int(np.flatnonzero(written)[0])
    assert np.array_equal(written[start : start + len(cue) - lead], expected[lead:])  # at half volume
    assert not written[start + len(cue) :].any()  # the muted one is silent


def test_kioskd_ctl_needs_only_the_socket_path(tmp_path: Path) -> None:
    """A typo elsewhere in the config must not break ``ctl status``; the socket path is all ctl reads."""
    config = tmp_path / "c.toml"
    config.write_text(f'[audio]\nchunk_ms = 7\nvolumee = 1\n[control]\nsocket = "{tmp_path / "nothing.sock"}"\n')
    result = subprocess.run([sys.executable, "-m", "kioskd", "ctl", "--config", str(config), "status"],
                            capture_output=True, text=True, timeout=60, env={**os.environ})
    assert result.returncode == 1
    assert result.stderr.strip() == (f"kioskd ctl: cannot talk to kioskd at {tmp_path / 'nothing.sock'}: "
                                     "no socket there (is kioskd running? systemctl status kioskd)")

"""Tests for kioskd.audio.jitter.JitterBuffer, all in virtual time (exact)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kioskd.audio.jitter import (
    STEADY_PLAYOUT_S,
    UNDERRUN_WINDOW_S,
    JitterBuffer,
)

RATE = 16000
PERIOD = 160  # one 10 ms device period at RATE
DT = PERIOD / RATE


def const(value: int, ms: float) -> np.ndarray:
    """``ms`` milliseconds of a constant value (lets tests tell chunks apart)."""
    return np.full(round(ms * RATE / 1000), value, dtype=np.int16)


def ramp(start: int, n: int) -> np.ndarray:
    """n distinct consecutive sample values (to check ordering exactly)."""
    return (np.arange(n) + start).astype(np.int16)


def test_prebuffers_until_target_then_plays_in_order() -> None:
    jb = JitterBuffer(RATE)  # start target 60 ms
    a, b = ramp(1, 640), ramp(1001, 640)  # 40 ms each
    assert jb.push(1, a, now=0.0)
    assert not np.any(jb.pull(PERIOD, now=0.0))  # 40 ms < 60 ms: still pre-buffering
    assert jb.playing and not jb.started and jb.depth_ms == 40.0
    assert jb.push(2, b, now=0.005)
    out = np.concatenate([jb.pull(PERIOD, now=0.01 + i * DT) for i in range(8)])
    assert np.array_equal(out, np.concatenate([a, b]))
    assert jb.depth_ms == 0.0 and not jb.playing
    assert jb.underruns == 0 and jb.target_ms == 60.0


def test_short_reply_starts_after_arrivals_go_quiet() -> None:
    jb = JitterBuffer(RATE)
    jb.push(1, const(500, 30), now=1.0)  # a 30 ms reply, shorter than the 60 ms target
    assert not np.any(jb.pull(PERIOD, now=1.05))  # quiet for 50 ms < 60 ms
    assert np.all(jb.pull(PERIOD, now=1.06) == 500)  # quiet for 60 ms: play what we have
    assert np.all(jb.pull(PERIOD, now=1.07) == 500)
    assert np.all(jb.pull(PERIOD, now=1.08) == 500)
    assert not jb.playing


def play_and_run_dry(jb: JitterBuffer, ms: int, t: float) -> float:
    """Push ``ms`` of audio at t, pull it out period by period until dry; returns time."""
    jb.push(1, const(100, ms), now=t)
    while jb.depth_ms > 0:
        assert len(jb.pull(PERIOD, now=t)) == PERIOD
        t += DT
    return t


def test_underrun_mid_reply_raises_target_by_half() -> None:
    jb = JitterBuffer(RATE)
    t = play_and_run_dry(jb, 100, 0.0)  # first pull started at once (100 ms >= 60 ms)
    assert jb.target_ms == 60.0 and jb.underruns == 0
    assert not np.any(jb.pull(PERIOD, now=t))  # dry
    jb.push(2, const(200, 80), now=t + 0.2)  # more of the same reply, 200 ms later
    assert jb.underruns == 1
    assert jb.target_ms == 90.0
    # Re-buffers to the new target: 80 ms < 90 ms is not enough to resume.
    assert not np.any(jb.pull(PERIOD, now=t + 0.21))
    jb.push(3, const(300, 10), now=t + 0.215)
    assert np.all(jb.pull(PERIOD, now=t + 0.22) == 200)  # 90 ms queued: resume


def test_underruns_grow_target_geometrically_up_to_max() -> None:
    jb = JitterBuffer(RATE, max_ms=250)
    t = 0.0
    expected = [90.0, 135.0, 202.5, 250.0, 250.0]
    for want in expected:
        t = play_and_run_dry(jb, 300, t)
        jb.pull(PERIOD, now=t)
        t += 0.1
        jb.push(9, const(1, 10), now=t)
        assert jb.target_ms == want
        t = play_and_run_dry(jb, 300, t)  # drain (the 10 ms joins this burst)
        t += 10.0  # then a long gap: the next reply is not an underrun
    assert jb.underruns == len(expected)


def test_running_dry_at_the_end_of_a_reply_is_not_an_underrun() -> None:
    jb = JitterBuffer(RATE)
    t = play_and_run_dry(jb, 500, 0.0)  # t: when the last sample has played
    jb.push(2, const(5, 100), now=t + UNDERRUN_WINDOW_S + 0.01)  # the next reply
    assert jb.underruns == 0 and jb.target_ms == 60.0
    t = play_and_run_dry(jb, 0, t + UNDERRUN_WINDOW_S + 0.01)
    # …while audio arriving just inside the window is the same reply, late.
    jb.push(3, const(5, 100), now=t + UNDERRUN_WINDOW_S - 0.01)
    assert jb.underruns == 1 and jb.target_ms == 90.0


def test_bursty_arrival_faster_than_real_time_is_not_jitter() -> None:
    jb = JitterBuffer(RATE)
    # A 2 s reply arrives as 100 ms chunks within 300 ms; the device pulls in real time.
    t, pushed, out = 0.0, 0, []
    for step in range(300):
        now = step * DT
        if pushed < 20 and now >= pushed * 0.015:
            jb.push(pushed + 1, const(pushed + 1, 100), now=now)
            pushed += 1
        out.append(jb.pull(PERIOD, now=now))
        t = now
    played = np.concatenate(out)
    assert jb.underruns == 0 and jb.target_ms == 60.0
    nonzero = played[played != 0]
    assert len(nonzero) == 2 * RATE
    assert np.array_equal(nonzero, np.repeat(np.arange(1, 21), 1600).astype(np.int16))
    assert t > 2.0


def test_steady_playout_lowers_target_gradually_to_min() -> None:
    jb = JitterBuffer(RATE, min_ms=20, start_ms=60)
    t = play_and_run_dry(jb, 100, 0.0)
    jb.pull(PERIOD, now=t)
    jb.push(1, const(7, 100), now=t + 0.1)  # underrun: 90 ms, steady count restarts
    assert jb.target_ms == 90.0
    t += 0.1
    periods = round(STEADY_PLAYOUT_S / DT)
    expected = [67.5, 50.625, 37.96875, 28.4765625, 21.357421875, 20.0, 20.0]
    for want in expected:
        jb.push(1, const(7, STEADY_PLAYOUT_S * 1000), now=t)
        before = jb.target_ms
        for i in range(periods):
            if i == periods - 1:
                assert jb.target_ms == before  # not a sample early
            jb.pull(PERIOD, now=t)
            t += DT
        assert jb.target_ms == want
    assert jb.underruns == 1


def test_interruption_discards_old_ids_and_plays_newer_ones() -> None:
    jb = JitterBuffer(RATE, fade_ms=5)
    for eid in (1, 2, 3, 4):
        assert jb.push(eid, const(1000 * eid, 50), now=0.0)
    assert np.all(jb.pull(PERIOD, now=0.0) == 1000)  # id 1 is playing
    jb.push(5, const(5000, 50), now=0.005)
    jb.interrupt(3, now=0.01)
    assert jb.depth_ms == 100.0  # only ids 4 and 5 are left
    assert not jb.push(3, const(3000, 50), now=0.02)  # late audio of a dead reply
    assert not jb.push(2, const(2000, 50), now=0.02)
    assert jb.push(6, const(6000, 20), now=0.02)
    out = np.concatenate([jb.pull(PERIOD, now=0.02 + i * DT) for i in range(20)])
    fade = out[:80]
    assert np.all((fade > 0) & (fade < 1000))  # a fade of id 1's audio (value 1000)
    assert np.all(np.diff(fade.astype(int)) <= 0)
    rest = out[80:]
    assert set(np.unique(rest).tolist()) == {0, 4000, 5000, 6000}
    assert np.array_equal(rest[rest != 0], np.concatenate(
        [const(4000, 50), const(5000, 50), const(6000, 20)]))
    assert jb.dropped_events == 2
    assert jb.stats()["discarded_ms"] == 40.0 + 50.0 + 50.0


def test_fade_is_short_monotonic_and_continues_the_waveform() -> None:
    jb = JitterBuffer(RATE, fade_ms=5)
    dc = const(8000, 200)
    jb.push(1, dc, now=0.0)
    last = jb.pull(PERIOD, now=0.0)[-1]
    jb.interrupt(1, now=0.01)
    assert jb.playing  # the fade is still to come
    out = jb.pull(PERIOD, now=0.01)
    fade, after = out[:80], out[80:]
    assert abs(int(fade[0]) - int(last)) <= 8000 / 80  # ≈ last played level: no click
    assert np.all(np.diff(fade.astype(int)) < 0)  # strictly decreasing
    assert 0 < fade[-1] <= 8000 / 80
    assert not np.any(after)
    assert not jb.playing and not np.any(jb.pull(PERIOD, now=0.02))


def test_fade_of_a_sine_has_no_click() -> None:
    jb = JitterBuffer(RATE, fade_ms=5)
    t = np.arange(RATE // 2)
    sine = np.round(10000 * np.sin(2 * np.pi * 300 * t / RATE)).astype(np.int16)
    jb.push(1, sine, now=0.0)
    played = np.concatenate([jb.pull(PERIOD, now=i * DT) for i in range(3)])
    jb.interrupt(1, now=0.03)
    out = jb.pull(PERIOD, now=0.03)
    max_step = int(np.max(np.abs(np.diff(sine.astype(int)))))
    assert abs(int(out[0]) - int(played[-1])) <= max_step  # continues the waveform
    envelope = np.abs(out[:80].astype(float)) / np.maximum(1, np.abs(sine[480:560]))
    assert np.all(np.diff(envelope[np.abs(sine[480:560]) > 500]) <= 0.01)
    assert not np.any(out[80:])


def test_interrupt_while_prebuffering_is_silent_without_fade() -> None:
    jb = JitterBuffer(RATE)
    jb.push(1, const(900, 30), now=0.0)
    jb.interrupt(1, now=0.0)
    assert not jb.playing
    assert not np.any(jb.pull(PERIOD, now=0.5))


def test_interruption_is_not_an_underrun() -> None:
    jb = JitterBuffer(RATE)
    jb.push(1, const(900, 100), now=0.0)
    jb.pull(PERIOD, now=0.0)
    jb.interrupt(1, now=0.01)
    jb.pull(PERIOD, now=0.01)
    jb.push(2, const(900, 100), now=0.05)
    assert jb.underruns == 0 and jb.target_ms == 60.0


def test_reset_forgets_interruption_and_queue_but_keeps_target() -> None:
    jb = JitterBuffer(RATE)
    t = play_and_run_dry(jb, 100, 0.0)
    jb.pull(PERIOD, now=t)
    jb.push(5, const(1, 100), now=t)
    jb.interrupt(5, now=t)
    assert not jb.push(3, const(1, 10), now=t)
    jb.reset()
    assert jb.depth_ms == 0.0 and not jb.playing
    assert jb.push(1, const(1, 100), now=t)  # event ids restart with a new conversation
    assert jb.target_ms == 90.0 and jb.underruns == 1


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(RATE, min_ms=100, start_ms=60)
    with pytest.raises(ValueError):
        JitterBuffer(0)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 30), st.integers(0, 4000)),
        st.tuples(st.just("pull"), st.integers(0, 2000), st.just(0)),
        st.tuples(st.just("interrupt"), st.integers(1, 30), st.just(0)),
        st.tuples(st.just("wait"), st.integers(0, 1000), st.just(0)),
        st.tuples(st.just("reset"), st.just(0), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_property_exact_lengths_no_dead_audio(sequence: list[tuple[str, int, int]]) -> None:
    """pull returns exactly n samples; depth never negative; dead ids never play."""
    jb = JitterBuffer(RATE, fade_ms=5)
    now = 0.0
    dead = 0  # highest interrupted id (0: none)
    fade_left = 0  # samples that may still belong to a fade-out
    for op, a, b in sequence:
        if op == "push":
            accepted = jb.push(a, np.full(b, 100 * a, np.int16), now)
            assert accepted == (a > dead)
        elif op == "pull":
            out = jb.pull(a, now)
            assert len(out) == a and out.dtype == np.int16
            checked = out[fade_left:]
            fade_left = max(0, fade_left - a)
            live = checked[checked != 0]
            assert np.all(live % 100 == 0) and np.all(live // 100 > dead)
        elif op == "interrupt":
            if jb.started and jb.depth_ms > 0:
                fade_left = jb.fade_samples
            jb.interrupt(a, now)
            dead = max(dead, a)
        elif op == "wait":
            now += a / 1000
        else:
            jb.reset()
            dead, fade_left = 0, 0
        assert jb.depth_ms >= 0
        assert jb.min_ms <= jb.target_ms <= jb.max_ms
        stats = jb.stats()
        assert stats["depth_ms"] == jb.depth_ms and stats["underruns"] == jb.underruns

"""Tests for kioskd.audio.jitter.JitterBuffer, all in virtual time (exact)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kioskd.audio.jitter import (
    LATENESS_WINDOW_S,
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


def tick(k: int) -> float:
    """Time of device period ``k`` (exact: no accumulated float error)."""
    return k * PERIOD / RATE


def simulate(
    jb: JitterBuffer, arrivals: list[tuple[float, int, np.ndarray]], ticks: int
) -> np.ndarray:
    """Like the benchmark: each period, push what has arrived, then pull one period.

    Returns the output, one row per period."""
    rows = []
    i = 0
    for k in range(ticks):
        now = tick(k)
        while i < len(arrivals) and arrivals[i][0] <= now + 1e-9:
            _, eid, samples = arrivals[i]
            jb.push(eid, samples, now)
            i += 1
        rows.append(jb.pull(PERIOD, now))
    assert i == len(arrivals)
    return np.array(rows)


def replies(
    count: int, delays: list[list[float]] | None = None, *, first: float = 0.5,
    reply_s: float = 4.0, gap_s: float = 3.0,
) -> list[tuple[float, int, np.ndarray]]:
    """Replies of 100 ms chunks sent in real time; chunk k of reply r delayed by
    ``delays[r][k]`` (order kept, as on TCP). Reply r's samples have value r + 1."""
    out: list[tuple[float, int, np.ndarray]] = []
    last = 0.0
    for r in range(count):
        t0 = first + r * (reply_s + gap_s)
        for k in range(round(reply_s / 0.1)):
            arr = max(last, t0 + k * 0.1 + (delays[r][k] if delays else 0.0))
            last = arr
            out.append((arr, r + 1, const(r + 1, 100)))
    return out


def reply_spans(rows: np.ndarray) -> dict[int, tuple[int, int, int]]:
    """Per reply value: (first audible period, last audible period, silent periods between)."""
    spans = {}
    for value in np.unique(rows[rows != 0]).tolist():
        full = np.flatnonzero(np.all(rows == value, axis=1))
        any_ = np.flatnonzero(np.any(rows == value, axis=1))
        first, last = int(any_[0]), int(any_[-1])
        spans[value] = (first, last, (last - first + 1) - len(full))
    return spans


def test_playout_starts_target_after_the_audio_was_due_then_plays_in_order() -> None:
    jb = JitterBuffer(RATE)  # start target 60 ms
    a, b = ramp(1, 640), ramp(1001, 640)  # 40 ms each
    assert jb.push(1, a, now=0.0)
    assert jb.playout_at() == pytest.approx(0.06)  # due at 0.0, played 60 ms later
    assert not np.any(jb.pull(PERIOD, now=0.0))
    assert jb.playing and not jb.started and jb.depth_ms == 40.0
    # b is due at 0.04 but arrives at 0.005: sent faster than real time, so the whole
    # reply's schedule moves 35 ms earlier.
    assert jb.push(2, b, now=0.005)
    assert jb.playout_at() == pytest.approx(0.025)
    assert not np.any(jb.pull(PERIOD, now=0.01))
    assert not np.any(jb.pull(PERIOD, now=0.02))
    out = np.concatenate([jb.pull(PERIOD, now=0.03 + i * DT) for i in range(8)])
    assert np.array_equal(out, np.concatenate([a, b]))
    assert jb.depth_ms == 0.0 and not jb.playing
    assert jb.underruns == 0 and jb.target_ms == 60.0 and jb.lateness_ms == 0.0


def test_short_reply_starts_target_after_it_arrived() -> None:
    jb = JitterBuffer(RATE)
    jb.push(1, const(500, 30), now=1.0)  # a 30 ms reply, shorter than the 60 ms target
    assert not np.any(jb.pull(PERIOD, now=1.05))  # 50 ms < 60 ms after it was due
    assert np.all(jb.pull(PERIOD, now=1.06) == 500)
    assert np.all(jb.pull(PERIOD, now=1.07) == 500)
    assert np.all(jb.pull(PERIOD, now=1.08) == 500)
    assert not jb.playing


def test_a_full_queue_starts_at_once() -> None:
    jb = JitterBuffer(RATE, max_ms=400)
    jb.push(1, const(3, 390), now=0.0)
    assert not np.any(jb.pull(PERIOD, now=0.0))  # 390 ms < max_ms: wait for the schedule
    jb.push(1, const(3, 10), now=0.0)  # …but 400 ms queued: waiting would only add delay
    assert np.all(jb.pull(PERIOD, now=0.0) == 3) and jb.started


def test_steady_real_time_chunks_never_underrun_and_target_falls() -> None:
    """100 ms chunks arriving in real time: the depth is 0 just before each arrival, but
    each sample plays ``target`` after it was due, so playout never runs dry."""
    jb = JitterBuffer(RATE, min_ms=20, start_ms=60)
    trace = replies(11)
    rows = simulate(jb, trace, round(75.0 / DT))
    spans = reply_spans(rows)
    assert jb.underruns == 0
    assert all(gaps == 0 for _, _, gaps in spans.values())
    assert all(last - first + 1 == 400 for first, last, _ in spans.values())  # 4 s each
    # Reply r starts (0.5 + 7 r) s + the target then: the floor, 60 ms × 0.75 after each
    # 10 s of playout (4 s per reply), down to min_ms; lateness 0 + 10 ms period is lower.
    targets = [60, 60, 60, 45, 45, 33.75, 33.75, 33.75, 25.3125, 25.3125, 20]
    starts = [round((0.5 + 7 * r + t / 1000) / DT + 0.4999) for r, t in enumerate(targets)]
    assert [spans[r + 1][0] for r in range(11)] == starts
    assert jb.target_ms == 20.0 and jb.lateness_ms == 0.0


def test_late_chunk_is_an_underrun_then_target_covers_it() -> None:
    jb = JitterBuffer(RATE)
    # Chunks due at 0.0, 0.1, 0.2, …; the third arrives 70 ms late.
    trace = [(0.0, 1, const(1, 100)), (0.1, 2, const(2, 100)), (0.27, 3, const(3, 100)),
             (0.3, 4, const(4, 100)), (0.4, 5, const(5, 100))]
    rows = simulate(jb, trace, 60)
    audible = np.any(rows != 0, axis=1)
    # Playout starts at 0.06 (due + 60 ms); chunk 3 is needed at 0.26: dry at 0.26.
    assert not audible[:6].any() and audible[6:26].all() and not audible[26:29].any()
    # Underrun at 0.27: floor 60 × 1.5 = 90 ms, lateness 70 + 10 ms period = 80 ms.
    assert jb.underruns == 1 and jb.target_ms == 90.0 and jb.lateness_ms == pytest.approx(70)
    # Resumes 90 ms after chunk 3 was due (0.2 + 0.09), then plays on without a gap.
    assert audible[29:59].all() and not audible[59:].any()
    assert np.array_equal(rows[rows != 0], np.repeat(np.arange(1, 6), 1600).astype(np.int16))


def test_underruns_grow_target_geometrically_up_to_max() -> None:
    jb = JitterBuffer(RATE, max_ms=250)
    t = 0.0
    expected = [90.0, 135.0, 202.5, 250.0, 250.0]
    for want in expected:
        before = jb.target_ms
        jb.push(1, const(1, 100), now=t)
        k = round(t / DT)
        while not jb.started:
            jb.pull(PERIOD, now=tick(k))
            k += 1
        assert tick(k - 1) == pytest.approx(t + before / 1000, abs=DT)
        while jb.depth_ms > 0:
            jb.pull(PERIOD, now=tick(k))
            k += 1
        dry = tick(k)
        jb.pull(PERIOD, now=dry)  # silence: the next chunk is late
        jb.push(1, const(1, 10), now=dry + 0.01)  # the rest of the reply, 10 ms late
        assert jb.target_ms == want
        while jb.playing:
            jb.pull(PERIOD, now=tick(k))
            k += 1
        t = tick(k) + 10.0  # then a long gap: the next reply is not an underrun
    assert jb.underruns == len(expected)


def test_ran_dry_but_next_chunk_in_time_for_the_next_pull_plays_on() -> None:
    jb = JitterBuffer(RATE)
    jb.push(1, const(1, 100), now=0.0)
    for k in range(6, 16):
        assert np.all(jb.pull(PERIOD, now=tick(k)) == 1)
    assert jb.depth_ms == 0 and not jb.started  # dry: the last sample plays until 0.16
    jb.push(2, const(2, 100), now=0.16)  # 60 ms late, but in time for the pull at 0.16
    assert jb.started and jb.underruns == 0
    assert np.all(jb.pull(PERIOD, now=0.16) == 2)  # no gap (the target is now 70 ms)
    assert jb.target_ms == 70.0


def test_running_dry_at_the_end_of_a_reply_is_not_an_underrun() -> None:
    jb = JitterBuffer(RATE)
    jb.push(1, const(1, 300), now=0.0)
    rows = np.array([jb.pull(PERIOD, now=tick(k)) for k in range(36)])
    assert not np.any(rows[:6]) and np.all(rows[6:] == 1)
    dry = tick(36)  # when the last sample has played
    t = dry + UNDERRUN_WINDOW_S + 0.01
    jb.push(2, const(5, 100), now=t)  # the next reply: a fresh schedule
    assert jb.underruns == 0 and jb.target_ms == 60.0 and jb.lateness_ms == 0.0
    at = jb.playout_at()
    assert at == pytest.approx(t + 0.06) and at is not None
    k = round(at / DT + 0.4999)
    for i in range(10):
        assert np.all(jb.pull(PERIOD, now=tick(k + i)) == 5)
    # …while audio arriving just inside the window is the same reply, late.
    dry = tick(k + 10)
    jb.push(3, const(5, 100), now=dry + UNDERRUN_WINDOW_S - 0.01)
    # (≈ 550 ms after it was due: the floor becomes 90 ms, the target max_ms)
    assert jb.underruns == 1 and jb.target_ms == 400.0 and jb.lateness_ms > 540.0


def test_jitter_100ms_no_underrun_after_the_first_reply() -> None:
    """Worst case: the first chunk of a reply on time, another 100 ms late."""
    jb = JitterBuffer(RATE)
    delays = [[0.0, 0.1] + [0.0] * 38] + [[0.0] + [0.1] * 39 for _ in range(4)]
    rows = simulate(jb, replies(5, delays), round(34.0 / DT))
    spans = reply_spans(rows)
    # Reply 1: the late chunk (offset 0.1 s) is needed at 0.66 but arrives at 0.7.
    assert spans[1][2] == 5 and jb.underruns == 1
    assert jb.lateness_ms == pytest.approx(100.0)
    # From then on the target (110 ms: lateness + one 10 ms period) covers it.
    assert jb.target_ms == pytest.approx(110.0)
    assert [spans[r][2] for r in range(2, 6)] == [0, 0, 0, 0]
    # Each later reply starts 110 ms after its first chunk arrived.
    assert [spans[r][0] for r in range(2, 6)] == [round((0.5 + 7 * (r - 1) + 0.11) / DT)
                                                  for r in range(2, 6)]


def test_random_jitter_100ms_no_underrun_after_the_first_reply() -> None:
    for seed in range(5):
        rng = np.random.default_rng(seed)
        jb = JitterBuffer(RATE)
        delays = [list(rng.uniform(0.0, 0.1, 40)) for _ in range(12)]
        rows = simulate(jb, replies(12, delays), round(85.0 / DT))
        spans = reply_spans(rows)
        assert len(spans) == 12
        assert all(spans[r][2] == 0 for r in range(2, 13)), seed
        assert jb.underruns <= 1  # all in the first reply
        assert jb.target_ms <= 110.0 + 1e-6


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
    assert jb.underruns == 0 and jb.target_ms == 60.0 and jb.lateness_ms == 0.0
    # The second chunk (due at 0.1, arrived at 0.02) moves the schedule 80 ms earlier:
    # playout starts with it at 0.02, not 60 ms after the first chunk.
    assert np.flatnonzero(played)[0] == 2 * PERIOD
    nonzero = played[played != 0]
    assert len(nonzero) == 2 * RATE
    assert np.array_equal(nonzero, np.repeat(np.arange(1, 21), 1600).astype(np.int16))
    assert len(np.flatnonzero(played)) == np.flatnonzero(played)[-1] - 2 * PERIOD + 1
    assert t > 2.0


def test_target_covers_one_device_period() -> None:
    jb = JitterBuffer(RATE, min_ms=20, start_ms=20)
    assert jb.target_ms == 20.0
    jb.pull(640, now=0.0)  # 40 ms periods: audio must be there a period early
    assert jb.target_ms == 40.0
    jb.pull(PERIOD, now=0.04)
    assert jb.target_ms == 20.0


def test_late_arrivals_are_forgotten_after_the_lateness_window() -> None:
    jb = JitterBuffer(RATE, min_ms=20, start_ms=20)  # no pulls yet: no period margin
    jb.push(1, const(1, 100), now=0.0)
    jb.push(1, const(1, 100), now=0.15)  # due at 0.1: 50 ms late
    assert jb.lateness_ms == pytest.approx(50.0) and jb.target_ms == pytest.approx(50.0)
    window_chunks = round(LATENESS_WINDOW_S / 0.1)
    for k in range(2, 1 + window_chunks):  # then on time, up to 30 s after the late one
        jb.push(1, const(1, 100), now=k * 0.1)
    assert jb.lateness_ms == pytest.approx(50.0)  # the window still holds it
    jb.push(1, const(1, 100), now=(1 + window_chunks) * 0.1)  # now wholly out
    assert jb.lateness_ms == pytest.approx(0.0, abs=1e-6) and jb.target_ms == 20.0


def test_steady_playout_lowers_target_gradually_to_min() -> None:
    jb = JitterBuffer(RATE, min_ms=20, start_ms=90)
    t = 0.0
    periods = round(STEADY_PLAYOUT_S / DT)
    expected = [67.5, 50.625, 37.96875, 28.4765625, 21.357421875, 20.0, 20.0]
    for want in expected:
        jb.push(1, const(7, STEADY_PLAYOUT_S * 1000), now=t)  # a new reply each time
        before = jb.target_ms
        at = jb.playout_at()
        assert at is not None
        k0 = round(at / DT + 0.4999)
        assert tick(k0) == pytest.approx(t + before / 1000, abs=DT)
        for i in range(periods):
            if i == periods - 1:
                assert jb.target_ms == before  # not a sample early
            jb.pull(PERIOD, now=tick(k0 + i))
        assert jb.target_ms == want
        t = tick(k0 + periods) + 10.0
    assert jb.underruns == 0 and jb.lateness_ms == 0.0


def test_underrun_then_steady_playout() -> None:
    """The floor (×1.5 on an underrun) and the measured lateness fall independently."""
    jb = JitterBuffer(RATE, min_ms=20, start_ms=60)
    jb.push(1, const(7, 100), now=0.0)
    for k in range(6, 17):  # plays 0.06–0.16, then dry
        jb.pull(PERIOD, now=tick(k))
    jb.push(1, const(7, 40000), now=tick(17))  # 70 ms late: an underrun
    assert jb.underruns == 1 and jb.target_ms == 90.0  # floor 90 > 70 + 10 ms period
    k = 17  # 40 s queued ≥ max_ms: resumes at once
    targets = []
    while jb.playing:
        jb.pull(PERIOD, now=tick(k))
        k += 1
        if (k - 17) % 1000 == 0:  # after every 10 s of playout
            targets.append(jb.target_ms)
    # The floor falls 90 → 67.5 → 50.625 → 37.97 → 28.48, but the 70 ms lateness holds
    # the target at 80 ms while its chunk is in the window of the last 30 s received.
    assert targets == [80.0, 80.0, 80.0, 80.0]
    jb.push(1, const(7, 100), now=tick(k) + 10.0)  # a new reply, on time
    assert jb.lateness_ms == pytest.approx(70.0)  # the late (40 s) chunk is still within the last 30 s
    jb.push(1, const(7, LATENESS_WINDOW_S * 1000 - 100), now=tick(k) + 10.0)
    assert jb.lateness_ms == 0.0 and jb.target_ms == 28.4765625  # now it is not
    assert jb.underruns == 1


def test_interruption_discards_old_ids_and_plays_newer_ones() -> None:
    jb = JitterBuffer(RATE, fade_ms=5)
    for eid in (1, 2, 3, 4):
        assert jb.push(eid, const(1000 * eid, 50), now=0.0)
    assert np.all(jb.pull(PERIOD, now=0.0) == 1000)  # id 1 is playing
    jb.push(5, const(5000, 50), now=0.005)
    jb.interrupt(4, now=0.01)
    assert jb.depth_ms == 100.0  # only ids 4 and 5 are left: the interruption's id and newer play
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


def test_per_turn_ids_a_reply_reusing_the_interruption_id_is_heard() -> None:
    """The service's ids: every chunk of a turn shares its id; the interruption carries the
    interrupting turn's id and the reply to that turn reuses it (the JS client plays it)."""
    jb = JitterBuffer(RATE, fade_ms=0)
    for _ in range(4):
        jb.push(1, const(1000, 50), now=0.0)  # the greeting: turn 1, many chunks
    jb.pull(PERIOD, now=0.06)
    jb.interrupt(2, now=0.07)  # the visitor's turn 2 cut it
    assert jb.depth_ms == 0.0
    assert not jb.push(1, const(1000, 50), now=0.08)  # the greeting's late chunk: dead
    assert jb.push(2, const(2000, 50), now=0.3)  # the reply to turn 2: heard
    assert jb.push(2, const(2000, 50), now=0.3)
    assert jb.push(3, const(3000, 50), now=0.3)  # the next turn: newer, heard
    out = np.concatenate([jb.pull(PERIOD, now=0.3 + i * DT) for i in range(30)])
    assert np.array_equal(out[out != 0], np.concatenate([const(2000, 100), const(3000, 50)]))
    assert jb.dropped_events == 1


def test_fade_is_short_monotonic_and_continues_the_waveform() -> None:
    jb = JitterBuffer(RATE, fade_ms=5)
    dc = const(8000, 200)
    jb.push(1, dc, now=0.0)
    assert not np.any(jb.pull(PERIOD, now=0.05))
    last = jb.pull(PERIOD, now=0.06)[-1]  # playout starts 60 ms after it was due
    jb.interrupt(2, now=0.07)
    assert jb.playing  # the fade is still to come
    out = jb.pull(PERIOD, now=0.07)
    fade, after = out[:80], out[80:]
    assert abs(int(fade[0]) - int(last)) <= 8000 / 80  # ≈ last played level: no click
    assert np.all(np.diff(fade.astype(int)) < 0)  # strictly decreasing
    assert 0 < fade[-1] <= 8000 / 80
    assert not np.any(after)
    assert not jb.playing and not np.any(jb.pull(PERIOD, now=0.08))


def test_fade_of_a_sine_has_no_click() -> None:
    jb = JitterBuffer(RATE, fade_ms=5)
    t = np.arange(RATE // 2)
    sine = np.round(10000 * np.sin(2 * np.pi * 300 * t / RATE)).astype(np.int16)
    jb.push(1, sine, now=0.0)
    played = np.concatenate([jb.pull(PERIOD, now=i * DT) for i in range(3)])
    jb.interrupt(2, now=0.03)
    out = jb.pull(PERIOD, now=0.03)
    max_step = int(np.max(np.abs(np.diff(sine.astype(int)))))
    assert abs(int(out[0]) - int(played[-1])) <= max_step  # continues the waveform
    envelope = np.abs(out[:80].astype(float)) / np.maximum(1, np.abs(sine[480:560]))
    assert np.all(np.diff(envelope[np.abs(sine[480:560]) > 500]) <= 0.01)
    assert not np.any(out[80:])


def test_interrupt_while_prebuffering_is_silent_without_fade() -> None:
    jb = JitterBuffer(RATE)
    jb.push(1, const(900, 30), now=0.0)
    jb.interrupt(2, now=0.0)
    assert not jb.playing
    assert not np.any(jb.pull(PERIOD, now=0.5))


def test_interruption_is_not_an_underrun() -> None:
    jb = JitterBuffer(RATE)
    jb.push(1, const(900, 100), now=0.0)
    assert np.all(jb.pull(PERIOD, now=0.06) == 900)
    jb.interrupt(2, now=0.07)
    jb.pull(PERIOD, now=0.07)  # the fade
    jb.push(2, const(900, 100), now=0.1)  # the reply to the interrupting turn (its id): a fresh schedule
    assert jb.underruns == 0 and jb.target_ms == 60.0 and jb.lateness_ms == 0.0
    assert jb.playout_at() == pytest.approx(0.16)


def test_newer_audio_kept_at_an_interruption_is_due_from_then() -> None:
    jb = JitterBuffer(RATE)
    jb.push(1, const(1, 100), now=0.0)
    jb.push(2, const(2, 100), now=0.0)
    jb.pull(PERIOD, now=0.0)
    assert np.all(jb.pull(PERIOD, now=0.04) == 1)  # (2nd chunk early: due at −0.1)
    jb.interrupt(2, now=0.05)
    assert jb.depth_ms == 100.0 and not jb.started
    assert jb.playout_at() == pytest.approx(0.05 + 0.06)


def test_reset_forgets_interruption_and_queue_but_keeps_target() -> None:
    jb = JitterBuffer(RATE)
    jb.push(1, const(1, 100), now=0.0)
    for k in range(6, 17):
        jb.pull(PERIOD, now=tick(k))
    jb.push(2, const(1, 100), now=tick(17))  # 70 ms late: floor 90 ms
    jb.pull(PERIOD, now=tick(17))
    jb.push(5, const(1, 100), now=tick(18))
    jb.interrupt(5, now=tick(18))
    assert not jb.push(3, const(1, 10), now=tick(18))
    jb.reset()
    assert jb.depth_ms == 0.0 and not jb.playing and not jb.started
    assert jb.push(1, const(1, 100), now=1.0)  # event ids restart with a new conversation
    assert jb.target_ms == 90.0 and jb.underruns == 1 and jb.lateness_ms == pytest.approx(70)
    assert jb.playout_at() == pytest.approx(1.09)  # a fresh schedule, the learned target


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
            assert accepted == (a >= dead)
        elif op == "pull":
            out = jb.pull(a, now)
            assert len(out) == a and out.dtype == np.int16
            checked = out[fade_left:]
            fade_left = max(0, fade_left - a)
            live = checked[checked != 0]
            assert np.all(live % 100 == 0) and np.all(live // 100 >= dead)
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

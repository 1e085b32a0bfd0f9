"""Tests for kioskd.audio.uplink.UplinkBuffer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kioskd.audio.uplink import UplinkBuffer

FRAME = 160


def frame(index: int) -> np.ndarray:
    """A 10 ms frame whose samples all carry its index (to track order and drops)."""
    return np.full(FRAME, index, dtype=np.int16)


def indices(audio: np.ndarray) -> list[int]:
    """Frame indices of a message built from :func:`frame` frames."""
    assert len(audio) % FRAME == 0
    return [int(v) for v in audio.reshape(-1, FRAME)[:, 0]]


def test_take_waits_for_a_chunk_then_returns_it_in_order() -> None:
    up = UplinkBuffer()
    assert up.take() is None
    up.push(frame(1), speech=True)
    assert up.take() is None and up.backlog_ms == 10.0
    up.push(frame(2), speech=False)
    msg = up.take()
    assert msg is not None and msg.dtype == np.int16 and indices(msg) == [1, 2]
    assert up.backlog_ms == 0.0 and up.take() is None
    assert up.stats()["coalesced_messages"] == 0.0


def test_coalesces_a_backlog_up_to_max_message() -> None:
    up = UplinkBuffer()
    for i in range(103):  # the sender stalled for 1.03 s
        up.push(frame(i), speech=True)
    sizes = []
    taken: list[int] = []
    while (msg := up.take()) is not None:
        sizes.append(len(msg) // FRAME * 10)
        taken += indices(msg)
    assert sizes == [250, 250, 250, 250, 30]
    assert taken == list(range(103))
    assert up.peak_backlog_ms == 1030.0
    assert up.stats()["coalesced_messages"] == 5.0
    up.push(frame(200), speech=True)
    assert up.take() is None  # 10 ms left: not a message yet
    flushed = up.flush()
    assert flushed is not None and indices(flushed) == [200]
    assert up.flush() is None


def test_bound_drops_oldest_silence_first() -> None:
    up = UplinkBuffer()  # 2000 ms: 200 frames
    speech = [i % 3 == 0 for i in range(300)]  # 100 speech, 200 silence
    for i, sp in enumerate(speech):
        up.push(frame(i), speech=sp)
        assert up.backlog_ms <= 2000.0
    assert up.backlog_ms == 2000.0 and up.peak_backlog_ms == 2000.0
    assert up.dropped_silence_ms == 1000.0 and up.dropped_speech_ms == 0.0
    kept = indices(up.flush())  # type: ignore[arg-type]
    silence = [i for i in range(300) if not speech[i]]
    assert kept == sorted([i for i in range(300) if speech[i]] + silence[100:])


def test_bound_drops_oldest_speech_when_no_silence_is_left() -> None:
    up = UplinkBuffer(max_backlog_ms=500)  # 50 frames
    for i in range(30):
        up.push(frame(i), speech=True)
    for i in range(30, 40):
        up.push(frame(i), speech=False)
    for i in range(40, 70):
        up.push(frame(i), speech=True)
    # 70 pushed, 20 over: the 10 silent frames go first, then speech frames 0..9.
    assert up.dropped_silence_ms == 100.0
    assert up.dropped_speech_ms == 100.0
    assert indices(up.flush()) == list(range(10, 30)) + list(range(40, 70))  # type: ignore[arg-type]
    stats = up.stats()
    assert stats["dropped_speech_ms"] == 100.0 and stats["backlog_ms"] == 0.0


def test_push_copies_the_frame() -> None:
    up = UplinkBuffer()
    buf = frame(5)
    up.push(buf, speech=True)
    buf[:] = 9
    up.push(buf, speech=True)
    assert indices(up.take()) == [5, 9]  # type: ignore[arg-type]


def test_rejects_inconsistent_sizes() -> None:
    with pytest.raises(ValueError):
        UplinkBuffer(chunk_ms=300, max_message_ms=250)
    with pytest.raises(ValueError):
        UplinkBuffer(max_message_ms=250, max_backlog_ms=200)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.booleans(), st.just("take"), st.just("flush")), max_size=400),
    st.sampled_from([30, 100, 250]),
)
def test_property_bound_order_and_conservation(ops: list[bool | str], bound_ms: int) -> None:
    up = UplinkBuffer(chunk_ms=20, max_message_ms=30, max_backlog_ms=bound_ms)
    pushed = 0
    sent: list[int] = []
    for op in ops:
        if op == "take" or op == "flush":
            msg = up.take() if op == "take" else up.flush()
            if msg is not None:
                assert len(msg) >= (20 * 16 if op == "take" else FRAME)
                if op == "take":
                    assert len(msg) <= 30 * 16
                sent += indices(msg)
        else:
            up.push(frame(pushed), speech=bool(op))
            pushed += 1
        assert 0.0 <= up.backlog_ms <= bound_ms
        assert up.peak_backlog_ms <= bound_ms
        dropped_ms = up.dropped_speech_ms + up.dropped_silence_ms
        assert len(sent) * 10 + up.backlog_ms + dropped_ms == pushed * 10
    assert sent == sorted(sent)  # oldest first, never reordered

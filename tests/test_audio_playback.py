"""The engine on a fake clocked device: barge-in at the device, and steady uplink messages.

A fake clocked device (its ``write`` blocks for one period, like a real sound card)
records every period it is given and the monotonic time the write began. The test
interrupts mid-reply and counts the samples of the dead reply written to the device
after ``interrupt()`` was called: at most the one period already taken from the jitter
buffer plus the fade.

A device that reports its free room (``get_write_available``, a ring buffer of two
periods like the benchmark's speaker) is written only when it has room, so the thread
never holds a period it took before the interruption: exactly the fade follows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import trio

from kioskd.audio.devices import Direction, Stream
from kioskd.audio.engine import QUIET_CAPTURE_PERIODS, AudioEngine
from kioskd.audio.formats import AudioFormat, encode
from kioskd.config import AudioConfig

LIMIT = 10.0
RATE = 16000
PERIOD_MS = 10
PERIOD = RATE * PERIOD_MS // 1000
FADE_MS = 5
FADE = RATE * FADE_MS // 1000
OLD_LEVEL = 5000
"""The interrupted reply: a constant, so every sample of it (and of its fade) is > 0."""
NEW_LEVEL = -3000
"""The next reply: negative, told apart from the old one by sign."""
ROUNDS = 6
"""Interruptions at different points of the device's period."""
FMT = AudioFormat.parse("pcm_16000")


@dataclass
class FakeDevice:
    """A clocked mono device at :data:`RATE`: reads give silence, writes are recorded."""

    name: str
    direction: Direction
    rate: int = RATE
    channels: int = 1
    clocked: bool | None = True
    writes: list[tuple[float, np.ndarray]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, frames: int) -> np.ndarray:
        time.sleep(frames / self.rate)
        return np.zeros(frames, np.int16)

    def write(self, samples: np.ndarray) -> None:
        with self.lock:
            self.writes.append((time.monotonic(), np.array(samples)))
        time.sleep(len(samples) / self.rate)

    def close(self) -> None:
        pass

    def written_since(self, t: float) -> np.ndarray:
        """Everything whose write began at or after monotonic time ``t``."""
        with self.lock:
            parts = [s for at, s in self.writes if at >= t]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)


@dataclass
class RingDevice(FakeDevice):
    """A clocked device with a ring buffer of :data:`RING` samples that reports its room.

    ``write`` waits until the samples fit behind what is still to play (and counts the
    writes that had to wait); the ring drains at :data:`RATE` on the monotonic clock.
    """

    end: float = 0.0  # monotonic time at which everything written so far has played
    blocked_writes: int = 0

    def queued(self) -> int:
        return max(0, round((self.end - time.monotonic()) * self.rate))

    def get_write_available(self) -> int:
        with self.lock:
            return max(0, RING - self.queued())

    def write(self, samples: np.ndarray) -> None:
        with self.lock:
            wait = (self.queued() + len(samples) - RING) / self.rate
        if wait > 0:
            self.blocked_writes += 1
            time.sleep(wait)
        with self.lock:
            now = time.monotonic()
            self.writes.append((now, np.array(samples)))
            self.end = max(self.end, now) + len(samples) / self.rate


RING = 2 * PERIOD


def opener(
    devices: dict[Direction, FakeDevice], kind: type[FakeDevice] = FakeDevice
) -> Callable[[str, Direction, int, int], Stream]:
    def open_fake(name: str, direction: Direction, rate: int, period_ms: int) -> Stream:
        devices[direction] = kind(name, direction)
        return devices[direction]

    return open_fake


async def interrupt_rounds(kind: type[FakeDevice]) -> tuple[list[int], FakeDevice]:
    """Samples of the dead reply written after ``interrupt()``, for each of :data:`ROUNDS`."""
    devices: dict[Direction, FakeDevice] = {}
    config = AudioConfig(input="fake", output="fake", echo="off", device_period_ms=PERIOD_MS, fade_ms=FADE_MS,
                         jitter_start_ms=20, jitter_min_ms=20)
    engine = AudioEngine(config, opener=opener(devices, kind))
    leaked: list[int] = []
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            spk = devices["output"]
            for round_ in range(ROUNDS):
                event = 2 * round_ + 1
                playback = engine.open_playback(FMT)
                playback.push(event, encode(np.full(RATE, OLD_LEVEL, np.int16), FMT))  # 1 s reply
                while not any(s.max() == OLD_LEVEL for _, s in spk.writes[-3:]):
                    await trio.sleep(0.001)  # it is playing
                await trio.sleep(round_ * PERIOD_MS / ROUNDS / 1000)  # a different phase each round
                t = time.monotonic()
                playback.interrupt(event + 1)  # the interrupting turn's id (the next reply shares it)
                playback.push(event, encode(np.full(RATE // 10, OLD_LEVEL, np.int16), FMT))  # late: dropped
                playback.push(event + 1, encode(np.full(RATE // 10, NEW_LEVEL, np.int16), FMT))  # the next reply
                while playback.speaking:
                    await trio.sleep(0.005)
                after = spk.written_since(t)
                leaked.append(int(np.count_nonzero(after > 0)))
                # the next reply plays whole, and only once
                assert np.count_nonzero(after == NEW_LEVEL) == RATE // 10
            nursery.cancel_scope.cancel()
    return leaked, devices["output"]


async def test_interrupt_is_heard_within_one_device_period() -> None:
    leaked, _ = await interrupt_rounds(FakeDevice)
    # the dead reply's samples written after interrupt(): at most the period already
    # taken from the jitter buffer, then the fade
    assert all(n <= PERIOD + FADE for n in leaked), leaked
    assert max(leaked) >= FADE  # the fade was heard (the cut is not a click)


async def test_interrupt_on_a_device_reporting_room_leaks_only_the_fade() -> None:
    leaked, spk = await interrupt_rounds(RingDevice)
    # nothing taken before the interruption waits in the thread: after interrupt()
    # exactly the fade (every sample of it > 0) is written, in every phase
    assert leaked == [FADE] * ROUNDS
    assert isinstance(spk, RingDevice) and spk.blocked_writes == 0  # it only ever wrote into room


async def test_uplink_messages_are_steady_20ms_in_ulaw_8000() -> None:
    """Resampling 16 kHz → 8 kHz gives every message its 20 ms (soxr once made ~110 ms bursts)."""
    devices: dict[Direction, FakeDevice] = {}
    config = AudioConfig(input="fake", output="fake", echo="off", preroll_ms=0)
    engine = AudioEngine(config, opener=opener(devices))
    fmt = AudioFormat.parse("ulaw_8000")
    sizes: list[int] = []
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            uplink = engine.open_uplink(fmt)
            while len(sizes) < 20:
                sizes.append(len(await uplink.receive()))
            uplink.close()
            nursery.cancel_scope.cancel()
    chunk = fmt.rate * config.chunk_ms // 1000 * fmt.bytes_per_sample
    frame = fmt.rate * 10 // 1000 * fmt.bytes_per_sample  # 10 ms
    # the first message is short by the filter's delay only; it may hold the whole idle
    # capture block (QUIET_CAPTURE_PERIODS frames) that was being read when the uplink opened
    first = max(chunk, QUIET_CAPTURE_PERIODS * frame)
    assert chunk - 6 * fmt.rate // 1000 <= sizes[0] < first, sizes
    # whole 10 ms frames in, the same audio out: a late consumer may get 2 frames coalesced, never a burst
    assert all(n % frame == 0 for n in sizes[1:]), sizes
    assert sizes[1:].count(chunk) >= len(sizes) // 2, sizes

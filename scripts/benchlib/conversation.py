"""Figures 1–4: start, uplink latency, barge-in and ping→pong, for kioskd and the official client.

One scripted full-duplex conversation per client gives figures 2–4: the visitor speaks
0.8 s, pauses 1.0 s, and so on; the simulated agent answers every turn with 3 s of audio
(sent 4× faster than real time), and the visitor's next utterance barges in on it, so
every cycle has one ``interruption``. The simulator pings every 100 ms.

* Uplink: every received ``user_audio_chunk`` is located, sample for sample, in the
  microphone signal (it carries seeded low-level noise, so every stretch is unique);
  per sample, latency = arrival at the simulator − capture time (``origin + j/16000`` on
  the clocked bench microphone). Samples captured in the first second after the first
  chunk (pre-roll and audio held while connecting) are left out.
* Barge-in: from the simulator sending ``interruption`` to the last audible sample the
  bench speaker played (read from its played-samples timeline).
* Ping: the simulator's own round trip (ping sent → pong received).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import trio

from kioskd.protocol.client_messages import UserAudioChunk
from kioskd.simulator import Conversation, Simulator, SimulatorConfig, open_simulator
from kioskd.state import Command, KioskState

from . import official
from .common import RATE, Devices, Mic, SampleLocator, Speaker, script, summary, trio_minus_mono
from .ours import kiosk_config, running_kiosk, tmpdir, watch_interruptions

PATTERN = [("speech", 0.8), ("silence", 1.0)]
LEAD_S = 1.0
BARGE_WINDOW_S = 0.8
SKIP_AFTER_FIRST_S = 1.0
KIOSK_DEVICE_BUFFER = 2 * 160  # two 10 ms periods in the device


def sim_config(**kw: Any) -> SimulatorConfig:
    # an agent without a first message: the figures follow the visitor's turns (the default
    # simulator greets first, as an agent with a first_message does)
    base: dict[str, Any] = dict(ping_interval=0.1, reply_seconds=3.0, vad_score_ms=0, tool_call=None, first_message="")
    base.update(kw)
    return SimulatorConfig(**base)


def mic_signal(seconds: float) -> np.ndarray:
    lead = script(LEAD_S, [("silence", LEAD_S)], seed=2)
    return np.concatenate([lead, script(seconds, PATTERN, seed=3)])


class LazyMic(Mic):
    """A Mic whose sample 0 is captured when it is first read (the device opens)."""

    def read(self, frames: int) -> np.ndarray:
        if self.origin < 0:
            self.origin = time.monotonic()
        return super().read(frames)


# --------------------------------------------------------------------------- analysis


def uplink_latencies(conv: Conversation, mic: Mic, off: float) -> tuple[list[float], int]:
    """Per-sample latencies (s, every 16th sample) and the count of chunks not found in the signal."""
    loc = SampleLocator(mic.signal)
    chunks = [(t, m) for t, m in conv.messages if isinstance(m, UserAudioChunk)]
    if not chunks:
        return [], 0
    skip_before = chunks[0][0] - off + SKIP_AFTER_FIRST_S
    out: list[float] = []
    missing = 0
    for t, m in chunks:
        pcm = np.frombuffer(m.user_audio_chunk, dtype="<i2")
        j = loc.locate(pcm)
        if j is None:
            missing += 1
            continue
        arrival = t - off
        idx = np.arange(j, j + len(pcm), 16)
        cap = mic.origin + idx / RATE
        keep = cap >= skip_before
        out.extend((arrival - cap[keep]).tolist())
    return out, missing


def barge_in(speaker: Speaker, times: list[float], off: float, turns: list[float]) -> tuple[list[float], int]:
    """Interruption sent → speaker silent (s), and how many found the speaker already silent.

    The window ends at the next agent turn (its audio is a new reply) or after BARGE_WINDOW_S.
    """
    out: list[float] = []
    already = 0
    for ti in times:
        a = speaker.now_index(ti - off)
        end = min([ti + BARGE_WINDOW_S] + [t for t in turns if t > ti])
        window = speaker.played(a, speaker.now_index(end - off))
        nz = np.flatnonzero(window)
        if len(nz) == 0:
            already += 1
            continue
        out.append((nz[-1] + 1) / RATE)
    return out, already


def pings(conv: Conversation) -> list[float]:
    return [pg.rtt for pg in conv.pongs if pg.rtt is not None]


T = TypeVar("T")


def constant(value: T) -> Callable[[], T]:
    """A callable that returns ``value`` (binds a loop's current value for a later call)."""
    return lambda: value


def chunk_arrived(conv: Conversation) -> Callable[[], bool]:
    """``sim.wait_for`` predicate: ``conv`` has its first user audio chunk."""
    return lambda: first_chunk_time(conv) is not None


def closed(conv: Conversation) -> Callable[[], bool]:
    """``sim.wait_for`` predicate: ``conv`` has ended."""
    return lambda: not conv.open


def kiosk_fetches_over(sim: Simulator, n: int) -> Callable[[], bool]:
    """``sim.wait_for`` predicate: the kiosk has fetched more than ``n`` signed URLs."""
    return lambda: sum(r.endpoint == "kiosk" for r in sim.backend_requests) > n


def first_chunk_time(conv: Conversation) -> float | None:
    for t, m in conv.messages:
        if isinstance(m, UserAudioChunk):
            return t
    return None


# --------------------------------------------------------------------------- kioskd


async def ours_conversation(seconds: float, chunk_ms: int = 20) -> dict[str, Any]:
    """Figures 2–4 for kioskd (uplink messages of ``chunk_ms``: the default, or the cost trade of figure 9)."""
    async with open_simulator(sim_config()) as sim, tmpdir() as tmp:
        start = time.monotonic()
        mic = LazyMic(origin=-1.0, signal=mic_signal(seconds + 5))
        speaker = Speaker(origin=start, seconds=seconds + 30, buffer=KIOSK_DEVICE_BUFFER)
        config = kiosk_config(sim, tmp, conversation={"idle_timeout": 60.0}, audio={"chunk_ms": chunk_ms})
        async with running_kiosk(config, Devices(mic, speaker)) as kiosk:
            kiosk.supervisor.command(Command.START)
            timed = await watch_interruptions(sim, 0)
            conv = sim.conversations[0]
            await trio.sleep(seconds)
            kiosk.supervisor.command(Command.END)
            with trio.move_on_after(3):
                await sim.wait_for(closed(conv))
            return conversation_figures(conv, mic, speaker, timed.times)



def conversation_figures(conv: Any, mic: Any, speaker: Any, interruption_times: list[float]) -> dict[str, Any]:
    """Figures 2–4 from one recorded conversation (the same arithmetic for both clients)."""
    off = trio_minus_mono()
    lat, missing = uplink_latencies(conv, mic, off)
    barge, already = barge_in(speaker, interruption_times, off, [t.t for t in conv.turns])
    return {
        "uplink": summary(lat, scale=1000) | {"chunks_not_found": missing},
        "barge_in": summary(barge, scale=1000) | {"already_silent": already},
        "ping": summary(pings(conv), scale=1000),
        "speaker_underruns": speaker.late_writes,
    }

async def ours_start(reps: int) -> dict[str, Any]:
    """Figure 1 for kioskd: trigger → first user_audio_chunk, prefetched URL and not (backend 100 ms)."""
    out: dict[str, Any] = {}
    for prefetch in (True, False):
        times: list[float] = []
        async with open_simulator(sim_config(ping_interval=2.0)) as sim, tmpdir() as tmp:
            sim.backend_faults.delay = 0.1
            mic = LazyMic(origin=-1.0, signal=script(600, [("silence", 1.0)], seed=4))
            speaker = Speaker(origin=time.monotonic(), seconds=600, buffer=KIOSK_DEVICE_BUFFER)
            config = kiosk_config(sim, tmp, backend={"prefetch": prefetch})
            async with running_kiosk(config, Devices(mic, speaker)) as kiosk:
                for i in range(reps):
                    if prefetch:
                        await sim.wait_for(kiosk_fetches_over(sim, i))
                    await trio.sleep(0.3)
                    t0 = trio.current_time()
                    kiosk.supervisor.command(Command.START)
                    conv = await sim.wait_for_conversation(i)
                    await sim.wait_for(chunk_arrived(conv))
                    times.append(first_chunk_time(conv) - t0)  # type: ignore[operator]
                    kiosk.supervisor.command(Command.END)
                    await sim.wait_for(closed(conv))
                    while kiosk.board.status.state is not KioskState.IDLE:
                        await trio.sleep(0.01)
        out["prefetched" if prefetch else "no_prefetch_backend_100ms"] = summary(times, scale=1000)
    return out


# --------------------------------------------------------------------------- official client


async def official_conversation(seconds: float) -> dict[str, Any]:
    """Figures 2–4 for the official client."""
    async with open_simulator(sim_config()) as sim:
        start = time.monotonic()
        mic = LazyMic(origin=-1.0, signal=mic_signal(seconds + 5))
        speaker = official.speaker_for_official(start, seconds + 30)
        audio = official.make_audio(lambda: mic, speaker)
        conv_client = official.make_conversation(sim.api_base, sim.config.api_key, sim.config.agent_id, audio,
                                                 requires_auth=True)
        await trio.to_thread.run_sync(conv_client.start_session)
        timed = await watch_interruptions(sim, 0)
        conv = sim.conversations[0]
        await trio.sleep(seconds)
        await trio.to_thread.run_sync(conv_client.end_session)
        await trio.to_thread.run_sync(conv_client.wait_for_session_end)
        with trio.move_on_after(3):
            await sim.wait_for(closed(conv))
        return conversation_figures(conv, mic, speaker, timed.times)


async def official_start(reps: int) -> dict[str, Any]:
    """Figure 1 for the official client: start_session() → first user_audio_chunk (it always fetches its URL)."""
    times: list[float] = []
    async with open_simulator(sim_config(ping_interval=2.0)) as sim:
        sim.upstream_faults.delay = 0.1
        for i in range(reps):
            mic = LazyMic(origin=-1.0, signal=script(30, [("silence", 1.0)], seed=4))
            speaker = official.speaker_for_official(time.monotonic(), 30)
            audio = official.make_audio(constant(mic), speaker)
            client = official.make_conversation(sim.api_base, sim.config.api_key, sim.config.agent_id, audio,
                                                 requires_auth=True)
            t0 = trio.current_time()
            await trio.to_thread.run_sync(client.start_session)
            conv = await sim.wait_for_conversation(i)
            with trio.fail_after(10):
                await sim.wait_for(chunk_arrived(conv))
            times.append(first_chunk_time(conv) - t0)  # type: ignore[operator]
            await trio.to_thread.run_sync(client.end_session)
            await trio.to_thread.run_sync(client.wait_for_session_end)
            await trio.sleep(0.3)
    return {"backend_100ms": summary(times, scale=1000)}

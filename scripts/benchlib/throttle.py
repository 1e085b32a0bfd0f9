"""Figure 7: the uplink under a thin link. 64 kbit/s each way (``proxy.bandwidth`` = 8000 B/s)
for a while during a conversation in which the visitor speaks (0.8 s speech, 1.0 s pause);
the uplink buffer's counters (peak backlog, speech and silence dropped) are read from the
kiosk's audio status, then the link is restored and the conversation must still be open."""

from __future__ import annotations

import time
from typing import Any

import trio

from kioskd.simulator import open_simulator
from kioskd.simulator.proxy import FaultProxy
from kioskd.state import Command, KioskState

from .common import Devices, Speaker, trio_minus_mono
from .conversation import KIOSK_DEVICE_BUFFER, LazyMic, mic_signal, sim_config, uplink_latencies
from .ours import kiosk_config, running_kiosk, tmpdir

BANDWIDTH = 64_000 / 8


async def ours(seconds: float) -> dict[str, Any]:
    async with (
        open_simulator(sim_config(ping_interval=2.0, require_token=False)) as sim, tmpdir() as tmp,
        FaultProxy("127.0.0.1", sim.agent.port) as proxy,
    ):
        mic = LazyMic(origin=-1.0, signal=mic_signal(seconds + 30))
        speaker = Speaker(origin=time.monotonic(), seconds=seconds + 60, buffer=KIOSK_DEVICE_BUFFER)
        config = kiosk_config(sim, tmp, ws_base=f"ws://127.0.0.1:{proxy.port}", conversation={"idle_timeout": 600.0})
        async with running_kiosk(config, Devices(mic, speaker)) as kiosk:
            kiosk.supervisor.command(Command.START)
            with trio.fail_after(10):
                while kiosk.board.status.state is not KioskState.CONVERSATION:
                    await trio.sleep(0.01)
            await trio.sleep(1.0)
            before = dict(kiosk.audio.status()["uplink"])
            proxy.bandwidth = BANDWIDTH
            peak = 0.0
            end = trio.current_time() + seconds
            while trio.current_time() < end:
                peak = max(peak, kiosk.audio.status()["uplink"].get("backlog_ms", 0.0))
                await trio.sleep(0.05)
            proxy.bandwidth = None
            await trio.sleep(3.0)
            after = dict(kiosk.audio.status()["uplink"])
            convs = len(sim.conversations)
            lat, _ = uplink_latencies(sim.conversations[0], mic, trio_minus_mono())
            still_open = kiosk.board.status.state is KioskState.CONVERSATION
            kiosk.supervisor.command(Command.END)
    return {
        "seconds": seconds,
        "bandwidth_kbit_s": 64,
        "peak_backlog_ms": max(peak, after.get("peak_backlog_ms", 0.0)),
        "dropped_speech_ms": after.get("dropped_speech_ms", 0.0) - before.get("dropped_speech_ms", 0.0),
        "dropped_silence_ms": after.get("dropped_silence_ms", 0.0) - before.get("dropped_silence_ms", 0.0),
        "coalesced_messages": after.get("coalesced_messages", 0.0) - before.get("coalesced_messages", 0.0),
        "conversation_open_after": still_open,
        "conversations": convs,
        # the proxy reads the kiosk's socket into an unbounded queue, so the backlog builds up
        # there, not in the kiosk: the uplink delay at the simulator shows it
        "max_uplink_delay_ms": 1000 * max(lat) if lat else None,
    }

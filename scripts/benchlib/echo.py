"""Figure 8: echo. (a) Echo reduction of kioskd's EchoCanceller (AEC3) on a simulated
speaker → microphone path (30 ms delay, decaying 60 ms tail, −6 dB; as tests/test_echo.py),
far end = the simulator's agent voice. (b) A scripted conversation in which the kiosk's
own speaker output reaches its microphone through that path: the visitor speaks 0.8 s
every 6 s, the agent answers with 3 s of audio; every ``interruption`` the simulator
sends is the agent being interrupted by its own voice (the visitor never talks over it).
Run with echo = aec, off and half_duplex, and for the official client (no echo handling).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import trio

from kioskd.audio.echo import EchoCanceller
from kioskd.simulator import open_simulator
from kioskd.simulator.speech import synth_speech
from kioskd.state import Command

from . import official
from .common import RATE, Devices, Speaker, room_ir, script
from .conversation import KIOSK_DEVICE_BUFFER, LazyMic, sim_config
from .ours import kiosk_config, running_kiosk, tmpdir

PATTERN = [("speech", 0.8), ("silence", 5.2)]
LEAD_S = 1.0


def erle_db() -> float:
    far = synth_speech(8.0, RATE, seed=3)
    echo = np.convolve(far.astype(np.float64), room_ir())[: len(far)]
    ec = EchoCanceller(rate=RATE, enabled=True)
    out = []
    for i in range(0, len(far) - 159, 160):
        ec.far(far[i : i + 160])
        out.append(np.asarray(ec.near(np.round(echo[i : i + 160]).astype(np.int16)), dtype=np.float64))
    res = np.concatenate(out)
    tail = slice(3 * RATE, len(res))  # after convergence
    return float(10 * np.log10(np.mean(echo[tail] ** 2) / max(np.mean(res[tail] ** 2), 1e-9)))


def mic_signal(seconds: float) -> np.ndarray:
    return np.concatenate([script(LEAD_S, [("silence", LEAD_S)], seed=6), script(seconds, PATTERN, seed=7)])


async def ours(mode: str, seconds: float) -> dict[str, Any]:
    async with open_simulator(sim_config(ping_interval=2.0)) as sim, tmpdir() as tmp:
        speaker = Speaker(origin=time.monotonic(), seconds=seconds + 30, buffer=KIOSK_DEVICE_BUFFER)
        mic = LazyMic(origin=-1.0, signal=mic_signal(seconds + 5), echo_from=speaker, echo_ir=room_ir())
        config = kiosk_config(sim, tmp, audio={"echo": mode}, conversation={"idle_timeout": 600.0})
        async with running_kiosk(config, Devices(mic, speaker)) as kiosk:
            kiosk.supervisor.command(Command.START)
            conv = await sim.wait_for_conversation(0)
            await trio.sleep(seconds)
            kiosk.supervisor.command(Command.END)
            return {"self_interruptions": len(conv.interruptions), "agent_turns": len(conv.turns),
                    "conversations": len(sim.conversations)}


async def official_run(seconds: float) -> dict[str, Any]:
    async with open_simulator(sim_config(ping_interval=2.0)) as sim:
        speaker = official.speaker_for_official(time.monotonic(), seconds + 30)
        mic = LazyMic(origin=-1.0, signal=mic_signal(seconds + 5), echo_from=speaker, echo_ir=room_ir())
        audio = official.make_audio(lambda: mic, speaker)
        client = official.make_conversation(sim.api_base, sim.config.api_key, sim.config.agent_id, audio,
                                            requires_auth=True)
        await trio.to_thread.run_sync(client.start_session)
        conv = await sim.wait_for_conversation(0)
        await trio.sleep(seconds)
        await trio.to_thread.run_sync(client.end_session)
        await trio.to_thread.run_sync(client.wait_for_session_end)
        return {"self_interruptions": len(conv.interruptions), "agent_turns": len(conv.turns)}


async def run(quick: bool, with_official: bool = True) -> dict[str, Any]:
    seconds = 6.0 if quick else 36.0
    out: dict[str, Any] = {"erle_db": erle_db(), "seconds": seconds, "visitor_turns": int(seconds // 6) + 1, "modes": {}}
    for mode in ("aec", "off", "half_duplex"):
        out["modes"][mode] = await ours(mode, seconds)
    if with_official:
        out["official"] = await official_run(seconds)
    return out

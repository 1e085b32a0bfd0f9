"""Figure 5: a dead link. Kiosk ↔ fault proxy ↔ simulator (public agent URL through the proxy).

* ``proxy.stall = True`` (every byte held, sockets open) → the kiosk leaves the
  conversation state (detected);
* 1 s later ``proxy.stall = False`` (network back) → the kiosk is in a new conversation
  again (its state is ``conversation``: the agent's metadata arrived);
* ``proxy.drop()`` (both sides see a reset) → does the client get back into a conversation
  (a new conversation at the simulator receiving audio)?
"""

from __future__ import annotations

import time
from typing import Any

import trio

from kioskd.simulator import open_simulator
from kioskd.simulator.proxy import FaultProxy
from kioskd.state import Command, KioskState

from . import official
from .common import Devices, Speaker, script, summary
from .conversation import KIOSK_DEVICE_BUFFER, LazyMic, constant, sim_config
from .ours import kiosk_config, running_kiosk, tmpdir

HOLD_AFTER_DETECT_S = 1.0


async def _wait_state(kiosk: Any, want: bool) -> float:
    """Trio time at which (state is CONVERSATION) == want (polled every 5 ms)."""
    while (kiosk.board.status.state is KioskState.CONVERSATION) != want:
        await trio.sleep(0.005)
    return trio.current_time()


async def ours(reps: int) -> dict[str, Any]:
    detect: list[float] = []
    recover: list[float] = []
    drop_recover: list[float] = []
    async with (
        open_simulator(sim_config(ping_interval=2.0, require_token=False)) as sim, tmpdir() as tmp,
        FaultProxy("127.0.0.1", sim.agent.port) as proxy,
    ):
        mic = LazyMic(origin=-1.0, signal=script(600, [("silence", 1.0)], seed=5))
        speaker = Speaker(origin=time.monotonic(), seconds=600, buffer=KIOSK_DEVICE_BUFFER)
        config = kiosk_config(sim, tmp, ws_base=f"ws://127.0.0.1:{proxy.port}", conversation={"idle_timeout": 600.0})
        async with running_kiosk(config, Devices(mic, speaker)) as kiosk:
            kiosk.supervisor.command(Command.START)
            with trio.fail_after(10):
                await _wait_state(kiosk, True)
            for _ in range(reps):
                await trio.sleep(1.0)
                t0 = trio.current_time()
                proxy.stall = True
                with trio.move_on_after(30):
                    detect.append(await _wait_state(kiosk, False) - t0)
                await trio.sleep(HOLD_AFTER_DETECT_S)
                t1 = trio.current_time()
                proxy.stall = False
                with trio.move_on_after(30):
                    recover.append(await _wait_state(kiosk, True) - t1)
            # a hard drop (RST both ways): back when a new conversation carries audio again
            await trio.sleep(1.0)
            n = len(sim.conversations)
            t2 = trio.current_time()
            proxy.drop()
            with trio.move_on_after(10):
                await sim.wait_for(lambda: len(sim.conversations) > n and sim.conversations[-1].audio_chunks > 0)
                drop_recover.append(trio.current_time() - t2)
            kiosk.supervisor.command(Command.END)
    return {
        "detect_s": summary(detect, unit="s"),
        "recover_s": summary(recover, unit="s"),
        "survives_drop": bool(drop_recover),
        "drop_to_new_conversation_s": drop_recover[0] if drop_recover else None,
    }


async def official_run(quick: bool) -> dict[str, Any]:
    """Stall and drop for the official client (no reconnect logic: does it notice, does it come back?)."""
    cap = 5.0 if quick else 50.0
    out: dict[str, Any] = {"stall_wait_cap_s": cap}
    async with (
        open_simulator(sim_config(ping_interval=2.0, require_token=False)) as sim,
        FaultProxy("127.0.0.1", sim.agent.port) as proxy,
    ):
        for phase in ("stall", "drop"):
            ended = trio.Event()
            ended_at: list[float] = []
            token = trio.lowlevel.current_trio_token()

            def on_disconnect(details: Any, ended: trio.Event = ended, ended_at: list[float] = ended_at,
                              token: trio.lowlevel.TrioToken = token) -> None:
                def note() -> None:
                    ended_at.append(trio.current_time())
                    ended.set()
                try:
                    token.run_sync_soon(note)
                except trio.RunFinishedError:
                    pass

            mic = LazyMic(origin=-1.0, signal=script(120, [("silence", 1.0)], seed=5))
            speaker = official.speaker_for_official(time.monotonic(), 120)
            audio = official.make_audio(constant(mic), speaker)
            client = official.make_conversation(f"http://127.0.0.1:{proxy.port}", sim.config.api_key,
                                                sim.config.agent_id, audio, requires_auth=False,
                                                on_disconnect=on_disconnect)
            n_before = len(sim.conversations)
            await trio.to_thread.run_sync(client.start_session)
            conv = await sim.wait_for_conversation(n_before)
            await trio.sleep(1.0)
            t0 = trio.current_time()
            if phase == "stall":
                proxy.stall = True
                with trio.move_on_after(cap):
                    await ended.wait()
                out["stall_detect_s"] = (ended_at[0] - t0) if ended_at else f"> {cap:g} s (not detected)"
                proxy.stall = False
            else:
                proxy.drop()
                with trio.move_on_after(5):
                    await ended.wait()
                out["drop_noticed_s"] = (ended_at[0] - t0) if ended_at else None
                await trio.sleep(3.0)
                out["survives_drop"] = len(sim.conversations) > n_before + 1
                out["recovers"] = "never (no reconnect)" if not out["survives_drop"] else "yes"
            if not ended.is_set():
                await trio.to_thread.run_sync(client.end_session)
            await trio.to_thread.run_sync(client.wait_for_session_end)
            del conv
    return out

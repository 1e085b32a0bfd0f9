"""Figure 8: echo, both sides of the trade-off (echo removed AND visitor kept).

(a) Offline, through ``EchoCanceller`` with the lab of :mod:`kioskd.audio.echolab`
(espeak-ng voices; agent from 1 s, visitor from 3 s; a simulated room: delay, decaying
tail, −6 dB): the visitor's attenuation during double talk in a room and with no echo
path, ERLE in single talk, across echo delays 10–200 ms and with 100 ppm clock drift.

(b) Barge-in detection, the real path: kioskd in-process on clocked bench devices
against the simulator, echo = aec. The visitor speaks 0.8 s, pauses 2.0 s, …; the agent
answers every turn with 3 s of audio, so every utterance after the first starts over the
agent, about 1.3 s into its reply (the pause is longer than the simulator's end of speech,
so no speech of the previous utterance counts towards the next). Per barge-in: from the
visitor's onset (capture time of the utterance's first sample) to the simulator's
``interruption`` (its VAD passed ``barge_in_ms`` of speech on what kioskd sent). In the
room (the speaker's played samples reach the microphone through the room response) and with
no echo path; echo = off with no echo path is the reference (what the microphone alone gives).

(c) Self-interruptions: a scripted conversation where the kiosk's own speaker output
reaches its microphone through the room; the visitor speaks 0.8 s every 6 s and never
over the agent, so every ``interruption`` is the agent interrupted by its own voice.
Modes aec, off and half_duplex, and the official client (no echo handling).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import trio

from kioskd.audio import echolab as lab
from kioskd.audio.echo import EchoCanceller
from kioskd.simulator import open_simulator
from kioskd.state import Command

from . import official
from .common import RATE, Devices, Speaker, room_ir, script, summary, trio_minus_mono
from .conversation import KIOSK_DEVICE_BUFFER, LazyMic, sim_config
from .ours import kiosk_config, running_kiosk, tmpdir, watch_interruptions

PATTERN = [("speech", 0.8), ("silence", 5.2)]
BARGE_PATTERN = [("speech", 0.8), ("silence", 2.0)]  # > end_of_speech_ms: every utterance starts a fresh turn
LEAD_S = 1.0
DELAYS_S = (0.010, 0.030, 0.100, 0.200)
DRIFT_PPM = 100.0
ONSET_WINDOW_S = 1.0  # an interruption more than this after the last onset is not a barge-in
ENGINE_BLOCK_FRAMES = 2  # microphone frames per block while an uplink is open (chunk_ms = 20)


# --------------------------------------------------------------------------- (a) offline


def offline(factory: Callable[[], lab.Canceller], quick: bool, *, headline_only: bool = False) -> dict[str, Any]:
    """Double-talk attenuation and ERLE of the canceller ``factory`` makes, on the lab's scenes
    (``headline_only``: the three figures of the table)."""

    def dt(**kw: Any) -> dict[str, Any]:
        scene = lab.make_scene(**kw)
        return lab.doubletalk_attenuation(scene, lab.run_canceller(factory(), scene)).as_dict()

    def single(**kw: Any) -> float:
        scene = lab.make_scene(visitor_from=99.0, **kw)  # no visitor: echo only
        return round(lab.erle(scene, lab.run_canceller(factory(), scene), 3.0, scene.seconds), 2)

    if headline_only:
        return {"room_after_2s": dt(visitor_from=3.0), "noecho_after_1s": dt(visitor_from=2.0, echo=False),
                "erle_db": single()}
    delays = DELAYS_S[1::2] if quick else DELAYS_S
    rooms = {f"delay_{int(d * 1000)}ms": lab.room_ir(delay_s=d) for d in delays}
    out: dict[str, Any] = {
        "room_after_2s": dt(visitor_from=3.0),
        "room_after_1s": dt(visitor_from=2.0),
        "noecho_after_1s": dt(visitor_from=2.0, echo=False),
        "room_drift_100ppm": dt(visitor_from=3.0, drift_ppm=DRIFT_PPM),
        "erle_by_room": {name: single(ir=ir) for name, ir in rooms.items()},
        "doubletalk_by_room": {name: dt(visitor_from=3.0, ir=ir) for name, ir in rooms.items()},
    }
    out["erle_db"] = single()
    out["erle_drift_100ppm"] = single(drift_ppm=DRIFT_PPM)
    return out


def canceller_cost(factory: Callable[[], lab.Canceller], block: int = ENGINE_BLOCK_FRAMES) -> float:
    """CPU seconds per second of audio (% of a core) of ``far`` + ``near`` on the lab's room scene,
    in blocks of ``block`` frames as the engine hands them over (each block's far frames first)."""
    scene = lab.make_scene()
    far, mic = scene.far.reshape(-1, 160), scene.mic.reshape(-1, 160)
    best = float("inf")
    for _ in range(5):
        c = factory()
        t0 = time.process_time()
        for j in range(0, len(mic), block):
            c.far(far[j : j + block])
            c.near(mic[j : j + block])
        best = min(best, time.process_time() - t0)
    return round(100 * best / scene.seconds, 3)


# --------------------------------------------------------------------------- (b) barge-in detection


def _onsets(pattern: list[tuple[str, float]], lead: float, seconds: float) -> list[float]:
    """Signal times (s) at which the visitor's utterances start."""
    out, t = [], lead
    while t < lead + seconds:
        for kind, sec in pattern:
            if kind == "speech":
                out.append(t)
            t += sec
    return out


async def barge_in_detect(mode: str, echo_path: bool, seconds: float) -> dict[str, Any]:
    """Visitor onset over the agent → the simulator's ``interruption`` (ms), one conversation."""
    signal = np.concatenate([script(LEAD_S, [("silence", LEAD_S)], seed=2), script(seconds + 5, BARGE_PATTERN, seed=3)])
    onsets = _onsets(BARGE_PATTERN, LEAD_S, seconds + 5)
    async with open_simulator(sim_config()) as sim, tmpdir() as tmp:
        speaker = Speaker(origin=time.monotonic(), seconds=seconds + 30, buffer=KIOSK_DEVICE_BUFFER)
        mic = LazyMic(origin=-1.0, signal=signal, echo_from=speaker if echo_path else None,
                      echo_ir=room_ir() if echo_path else None)
        config = kiosk_config(sim, tmp, audio={"echo": mode}, conversation={"idle_timeout": 60.0})
        async with running_kiosk(config, Devices(mic, speaker)) as kiosk:
            kiosk.supervisor.command(Command.START)
            timed = await watch_interruptions(sim, 0)
            conv = sim.conversations[0]
            await trio.sleep(seconds)
            kiosk.supervisor.command(Command.END)
            with trio.move_on_after(3):
                await sim.wait_for(lambda: not conv.open)
        off = trio_minus_mono()
        delays: list[float] = []
        for t in timed.times:
            at = t - off - mic.origin  # signal time of the interruption
            before = [o for o in onsets if o <= at]
            if before and at - before[-1] <= ONSET_WINDOW_S:
                delays.append(at - before[-1])
        barge_ins = sum(1 for o in onsets[1:] if o < seconds)
        return summary(delays, scale=1000) | {"utterances_over_agent": barge_ins, "agent_turns": len(conv.turns)}


# --------------------------------------------------------------------------- (c) self-interruptions


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


# --------------------------------------------------------------------------- figure


def candidates() -> dict[str, Callable[[], lab.Canceller]]:
    """Echo cancellers measured side by side offline (the first is kioskd's default)."""
    from .cancellers import available

    ours: dict[str, Callable[[], lab.Canceller]] = {"kioskd": lambda: EchoCanceller(rate=RATE, enabled=True)}
    return ours | available()


async def run(quick: bool, with_official: bool = True) -> dict[str, Any]:
    seconds = 6.0 if quick else 36.0
    barge_seconds = 12.0 if quick else 40.0
    cands = candidates()
    default = next(iter(cands))
    side = {name: offline(f, quick, headline_only=quick and name != default) for name, f in cands.items()}
    for _ in range(2):  # interleaved, best of both rounds: the cancellers see the same machine load
        for name, f in cands.items():
            for key, block in (("cpu_pct", ENGINE_BLOCK_FRAMES), ("cpu_pct_frame_by_frame", 1)):
                side[name][key] = min(side[name].get(key, float("inf")), canceller_cost(f, block))
    figs = side[default]
    out: dict[str, Any] = {
        "canceller": default,
        "erle_db": figs["erle_db"],
        "doubletalk_room_db": figs["room_after_2s"]["median_db"],
        "doubletalk_room_after_1s_db": figs["room_after_1s"]["median_db"],
        "doubletalk_noecho_db": figs["noecho_after_1s"]["median_db"],
        "candidates": side,
        "barge_in_detect_ms": await barge_in_detect("aec", True, barge_seconds),
        "barge_in_detect_noecho_ms": await barge_in_detect("aec", False, barge_seconds),
        "barge_in_detect_reference_ms": await barge_in_detect("off", False, barge_seconds),
        "seconds": seconds,
        "visitor_turns": int(seconds // 6) + 1,
        "modes": {},
    }
    for mode in ("aec", "off", "half_duplex"):
        out["modes"][mode] = await ours(mode, seconds)
    if with_official:
        out["official"] = await official_run(seconds)
    return out

"""A thin link pushes back on the kiosk: the uplink backlog builds in the kiosk (not in
kernel buffers or the proxy), stays bounded, drops silence before speech and coalesces.

A kiosk with a wav: microphone (the visitor's 4.1 s of speech, then silence) talks to the
simulator through a FaultProxy throttled to 64 kbit/s each way, about a fifth of what
16 kHz PCM needs as base64 JSON. Throttling starts ~1 s before the speech ends, so the
backlog holds speech followed by silence when it reaches its bound.
"""

from __future__ import annotations

from pathlib import Path

import trio

from kioskd.simulator import SimulatorConfig, open_simulator
from kioskd.simulator.proxy import FaultProxy
from kioskd.state import Command, KioskState

from kiosk_harness import SPEECH_WAV, kiosk_config, read_wav, running_kiosk

BANDWIDTH = 64_000 / 8  # bytes/s each way
THROTTLED_FOR = 6.0
MAX_BACKLOG_MS = 2000
MAX_MESSAGE_MS = 250
PCM_BYTES_PER_MS = 32  # pcm_16000 at the simulator


async def test_throttled_link_fills_the_kiosk_backlog_bounded_silence_first_coalesced(tmp_path: Path) -> None:
    speech, rate = read_wav(SPEECH_WAV)
    speech_seconds = len(speech) / rate
    sim_config = SimulatorConfig(ping_interval=1.0, require_token=True)
    with trio.fail_after(28):
        async with open_simulator(sim_config) as sim, FaultProxy("127.0.0.1", sim.agent.port) as proxy:
            sim.backend.ws_base = lambda: f"ws://127.0.0.1:{proxy.port}"
            config = kiosk_config(
                sim, tmp_path,
                conversation={"idle_timeout": 120.0},
                audio={"max_backlog_ms": MAX_BACKLOG_MS, "max_message_ms": MAX_MESSAGE_MS},
            )
            async with running_kiosk(config) as rk:
                mic_opened = trio.current_time()  # the wav: microphone starts when the kiosk does
                kiosk = rk.kiosk
                kiosk.supervisor.command(Command.START)
                await rk.wait_state(KioskState.CONVERSATION)
                await sim.wait_for(lambda: bool(sim.conversations) and sim.conversations[0].audio_chunks > 10)
                conv = sim.conversations[0]

                def uplink() -> dict[str, float]:
                    return kiosk.status()["audio"]["uplink"]

                # Healthy link: 20 ms messages, no backlog to speak of.
                chunks0, bytes0 = conv.audio_chunks, len(conv.audio_raw)
                await trio.sleep(0.5)
                healthy_ms = (len(conv.audio_raw) - bytes0) / (conv.audio_chunks - chunks0) / PCM_BYTES_PER_MS
                assert healthy_ms <= 40
                before = dict(uplink())
                assert before["dropped_speech_ms"] == before["dropped_silence_ms"] == 0

                await trio.sleep_until(mic_opened + speech_seconds - 1.0)
                proxy.bandwidth = BANDWIDTH
                samples: list[dict[str, float]] = []
                windows: list[float] = []  # mean ms of audio per message, per 0.5 s at the simulator
                last = (conv.audio_chunks, len(conv.audio_raw))
                end = trio.current_time() + THROTTLED_FOR
                while trio.current_time() < end:
                    await trio.sleep(0.5)
                    samples.append(dict(uplink()))
                    now = (conv.audio_chunks, len(conv.audio_raw))
                    if now[0] > last[0]:
                        windows.append((now[1] - last[1]) / (now[0] - last[0]) / PCM_BYTES_PER_MS)
                    last = now
                proxy.bandwidth = None
                after = dict(uplink())

                # The backlog built up in the kiosk, up to (and never past) its bound.
                assert max(s["backlog_ms"] for s in samples) >= MAX_BACKLOG_MS / 2, samples
                assert after["peak_backlog_ms"] <= MAX_BACKLOG_MS
                assert all(s["backlog_ms"] <= MAX_BACKLOG_MS for s in samples)
                # Past the bound, silence went and speech stayed.
                assert after["dropped_silence_ms"] > 0, after
                assert after["dropped_speech_ms"] == 0, after
                # Fewer, larger messages: toward max_message_ms, never above it.
                assert after["coalesced_messages"] > before["coalesced_messages"]
                assert windows and max(windows) >= 0.6 * MAX_MESSAGE_MS, windows
                assert max(windows) <= MAX_MESSAGE_MS + 10, windows

                # The link recovers; the conversation was never lost.
                await trio.sleep(1.5)
                assert uplink()["backlog_ms"] < 500
                assert kiosk.board.status.state is KioskState.CONVERSATION
                assert len(sim.conversations) == 1
                kiosk.supervisor.command(Command.END)
                await rk.wait_state(KioskState.IDLE)

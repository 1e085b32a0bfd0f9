"""A thin link pushes back on the kiosk: the uplink backlog builds in the kiosk (not in
kernel buffers or the proxy), stays bounded, drops silence before speech and coalesces.

A kiosk with a wav: microphone (the visitor's 4.1 s of speech, then silence) talks to the
simulator through a FaultProxy throttled to 64 kbit/s each way, about a fifth of what
16 kHz PCM needs as base64 JSON. Throttling starts ~1 s before the speech ends, so the
backlog holds speech followed by silence when it reaches its bound.

Nothing here depends on how fast the machine is (a Pi, or arm64 under qemu, is several
times slower than a PC): the test waits for each outcome — the bound reached, silence
dropped, a full ``max_message_ms`` message delivered, the backlog drained — instead of
sampling fixed windows of wall-clock time, and it checks the size of every message the
simulator received. ``fail_after`` only guards against a hang.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import trio

from kiosk_harness import SPEECH_WAV, kiosk_config, read_wav, running_kiosk
from kioskd.protocol.client_messages import UserAudioChunk
from kioskd.service import link
from kioskd.simulator import SimulatorConfig, open_simulator
from kioskd.simulator.proxy import FaultProxy
from kioskd.simulator.records import Conversation
from kioskd.state import Command, KioskState

BANDWIDTH = 64_000 / 8  # bytes/s each way
CHUNK_MS = 20
MAX_BACKLOG_MS = 2000
MAX_MESSAGE_MS = 250
PCM_BYTES_PER_MS = 32  # pcm_16000 at the simulator
POLL = 0.05  # how often the kiosk's counters are sampled while waiting
HANG_GUARD = 120  # seconds; an emulated CPU needs ~3× a PC's ~12 s


def message_ms(conv: Conversation) -> list[float]:
    """Audio per user_audio_chunk the simulator received, in order, in ms."""
    return [
        len(m.user_audio_chunk) / PCM_BYTES_PER_MS for _, m in conv.messages if isinstance(m, UserAudioChunk)
    ]


async def poll_until(done: Callable[[], bool], sample: Callable[[], None]) -> None:
    """Call ``sample`` every POLL seconds until ``done()`` holds."""
    while True:
        sample()
        if done():
            return
        await trio.sleep(POLL)


async def test_congestion_is_the_kernel_holding_unsent_bytes_not_a_timing() -> None:
    """The sender's gate: congested exactly while more than CONGESTED_BYTES wait unsent.

    The peer does not read and its receive buffer is small, so bytes written past what it
    accepts stay unsent in the kiosk's socket; once it reads them all, the gate opens.
    Also under qemu-user, which lacks the SIOCOUTQNSD ioctl this once relied on.
    """
    with trio.fail_after(10):
        listener = trio.socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by the accepted socket
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        kiosk = trio.socket.socket()
        link._limit_send_buffer(kiosk)
        await kiosk.connect(listener.getsockname())
        peer, _ = await listener.accept()
        assert not link.congested(kiosk)
        sent = 0
        while not link.congested(kiosk):
            sent += await kiosk.send(b"x" * 512)  # never blocks: the gate closes well before SO_SNDBUF fills
        assert sent > link.CONGESTED_BYTES
        received = 0
        while received < sent:
            received += len(await peer.recv(65536))
        assert not link.congested(kiosk)
        for s in (kiosk, peer, listener):
            s.close()


async def test_throttled_link_fills_the_kiosk_backlog_bounded_silence_first_coalesced(tmp_path: Path) -> None:
    speech, rate = read_wav(SPEECH_WAV)
    speech_seconds = len(speech) / rate
    sim_config = SimulatorConfig(ping_interval=1.0, require_token=True)
    with trio.fail_after(HANG_GUARD):
        async with open_simulator(sim_config) as sim, FaultProxy("127.0.0.1", sim.agent.port) as proxy:
            sim.backend.ws_base = lambda: f"ws://127.0.0.1:{proxy.port}"
            config = kiosk_config(
                sim, tmp_path,
                conversation={"idle_timeout": 120.0},
                audio={"chunk_ms": CHUNK_MS, "max_backlog_ms": MAX_BACKLOG_MS, "max_message_ms": MAX_MESSAGE_MS},
            )  # fmt: skip
            async with running_kiosk(config) as rk:
                mic_opened = trio.current_time()  # the wav: microphone starts when the kiosk does
                kiosk = rk.kiosk
                kiosk.supervisor.command(Command.START)
                await rk.wait_state(KioskState.CONVERSATION)
                conv = await sim.wait_for_conversation()

                def uplink() -> dict[str, float]:
                    figures: dict[str, float] = kiosk.status()["audio"]["uplink"]
                    return figures

                # Healthy link: 20 ms messages (the pre-roll aside), nothing dropped.
                await sim.wait_for(lambda: len(message_ms(conv)) >= 40)
                healthy = sorted(message_ms(conv)[10:40])
                assert healthy[len(healthy) // 2] == CHUNK_MS, healthy
                before = dict(uplink())
                assert before["dropped_speech_ms"] == before["dropped_silence_ms"] == 0

                throttle_at = mic_opened + speech_seconds - 1.0
                assert trio.current_time() < throttle_at, "the conversation opened after the speech it needs"
                await trio.sleep_until(throttle_at)
                proxy.bandwidth = BANDWIDTH
                first_throttled = len(message_ms(conv))
                samples: list[dict[str, float]] = []

                def throttled() -> list[float]:
                    return message_ms(conv)[first_throttled:]

                # The backlog builds in the kiosk up to its bound, silence is dropped, and
                # the sender coalesces it into full max_message_ms messages.
                await poll_until(
                    lambda: samples[-1]["dropped_silence_ms"] > 0 and max(throttled(), default=0) >= MAX_MESSAGE_MS,
                    lambda: samples.append(dict(uplink())),
                )
                proxy.bandwidth = None
                after = dict(uplink())

                assert max(s["backlog_ms"] for s in samples) == MAX_BACKLOG_MS, samples
                assert after["peak_backlog_ms"] == MAX_BACKLOG_MS
                assert after["dropped_speech_ms"] == 0, after
                assert after["coalesced_messages"] > before["coalesced_messages"]
                assert max(throttled()) == MAX_MESSAGE_MS, throttled()

                # The link recovers: the backlog drains and messages are 20 ms again; the
                # conversation was never lost and no speech was dropped.
                recovered = len(message_ms(conv))
                await poll_until(
                    lambda: uplink()["backlog_ms"] < 100 and message_ms(conv)[recovered:][-5:] == [CHUNK_MS] * 5,
                    lambda: samples.append(dict(uplink())),
                )
                assert all(s["backlog_ms"] <= MAX_BACKLOG_MS for s in samples)
                assert all(ms <= MAX_MESSAGE_MS for ms in message_ms(conv)), message_ms(conv)
                assert uplink()["dropped_speech_ms"] == 0
                assert kiosk.board.status.state is KioskState.CONVERSATION
                assert len(sim.conversations) == 1
                kiosk.supervisor.command(Command.END)
                await rk.wait_state(KioskState.IDLE)

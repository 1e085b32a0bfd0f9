"""The status light end to end: the real daemon on gpiozero mock PWM pins (an RGB LED), against the simulator.

One whole conversation (button press, the visitor talks, the agent answers, press to end)
proves three things about the light:

* PRIVACY: every chunk of microphone audio that was sent went out while the light showed
  the listening (or agent-speaking) colour, read from the pins at the moment the chunk
  left the microphone's uplink for the socket;
* its colour history is the board's state history, change for change;
* while listening its brightness follows the (smoothed) ``vad_score`` at ≤ UPDATE_HZ.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import trio
from gpiozero.pins.mock import MockFactory, MockPWMPin

from kiosk_harness import SPEECH_WAV, RunningKiosk, kiosk_config, running_kiosk
from kioskd.hardware.leds import (
    COLOURS,
    LEVELS,
    LISTEN_SPAN,
    PRIVACY_MIN_BRIGHTNESS,
    UPDATE_HZ,
    VAD_TAU,
    LightState,
    light_state,
)
from kioskd.protocol.client_messages import UserAudioChunk
from kioskd.service.daemon import Kiosk
from kioskd.simulator import SimulatorConfig, open_simulator
from kioskd.simulator.settings import AGENT_CLIENT_EVENTS
from kioskd.state import KioskState, Status

TIMEOUT = 30.0
BUTTON_PIN = 17
RGB_PINS = (5, 6, 13)
QUANTUM = 1.0 / LEVELS
#: The smoothed VAD score at time t is a weighted mean of the scores in (t - WINDOW, t],
#: plus at most exp(-(WINDOW - one tick) / VAD_TAU) of older ones.
WINDOW = 5 * VAD_TAU
OLDER_WEIGHT = math.exp(-(WINDOW - 1.0 / UPDATE_HZ) / VAD_TAU)

#: A board listener runs within this long of the board change that called it.
SAME_STEP = 0.001

RGB = tuple[float, float, float]


def shows_listening(rgb: RGB) -> bool:
    """The light shows the listening (green) or agent-speaking (cyan) colour, at least at the privacy floor."""
    r, g, b = rgb
    return g >= PRIVACY_MIN_BRIGHTNESS - QUANTUM and r <= QUANTUM and (b <= QUANTUM or abs(b - g) <= QUANTUM)


def colour_name(rgb: RGB) -> RGB | None:
    """The pattern colour (a COLOURS value) an LED value belongs to; None when the light is off."""
    top = max(rgb)
    if top <= 0.0:
        return None
    norm = tuple(c / top for c in rgb)
    best = min(COLOURS.values(), key=lambda c: sum((a - b) ** 2 for a, b in zip(c, norm, strict=True)))
    assert sum((a - b) ** 2 for a, b in zip(best, norm, strict=True)) < 0.02, f"{rgb} is no pattern's colour"
    return best


def collapse(seq: list[Any]) -> list[Any]:
    return [x for i, x in enumerate(seq) if i == 0 or x != seq[i - 1]]


def value_at(history: list[tuple[float, Any]], t: float) -> Any:
    """The last value written at or before ``t``."""
    before = [v for ht, v in history if ht <= t]
    assert before, f"nothing written before {t}"
    return before[-1]


class ObservedUplink:
    """Wraps the engine's uplink: records each chunk with the light's colour as it leaves for the socket."""

    def __init__(self, inner: Any, record: Callable[[bytes], None]) -> None:
        self._inner = inner
        self._record = record

    def set_format(self, fmt: Any) -> None:
        self._inner.set_format(fmt)

    async def receive(self) -> bytes:
        chunk: bytes = await self._inner.receive()
        self._record(chunk)  # nothing awaits between this and the session's send_message
        return chunk

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@asynccontextmanager
async def kiosk_with_rgb_light(
    config: Any, setup: Callable[[Kiosk, MockFactory], None]
) -> AsyncIterator[tuple[RunningKiosk, MockFactory]]:
    """The real daemon with an RGB LED and a button on mock pins; ``setup`` runs before it starts."""
    factory = MockFactory(pin_class=MockPWMPin)
    try:
        async with running_kiosk(config, pin_factory=factory, setup=lambda kiosk: setup(kiosk, factory)) as running:
            yield running, factory
    finally:
        factory.close()


async def click(factory: MockFactory) -> None:
    factory.pin(BUTTON_PIN).drive_low()
    await trio.sleep(0.15)
    factory.pin(BUTTON_PIN).drive_high()


async def test_light_over_a_whole_conversation(tmp_path: Path) -> None:
    sent: list[tuple[float, bytes, RGB]] = []  # (time, chunk, colour on the pins) at each send
    board: list[tuple[float, Status]] = []

    def setup(kiosk: Kiosk, factory: MockFactory) -> None:
        def colour() -> RGB:
            r, g, b = (float(factory.pin(p).state) for p in RGB_PINS)
            return (r, g, b)

        def record(chunk: bytes) -> None:
            sent.append((trio.current_time(), chunk, colour()))

        open_uplink = kiosk.audio.open_uplink
        kiosk.audio.open_uplink = lambda *a: ObservedUplink(open_uplink(*a), record)  # type: ignore[method-assign, assignment]
        board.append((-math.inf, kiosk.board.status))
        kiosk.board.listen(lambda status: board.append((trio.current_time(), status)))

    # an agent configured to send vad_score (the service's default events have none)
    async with open_simulator(
        SimulatorConfig(vad_score_ms=50, client_events=(*AGENT_CLIENT_EVENTS, "vad_score"))
    ) as sim:
        config = kiosk_config(
            sim,
            tmp_path,
            audio={"input": f"wav:{SPEECH_WAV}"},
            trigger={"mode": "button"},
            button={"pin": BUTTON_PIN, "mode": "toggle"},
            leds={"kind": "rgb", "red": RGB_PINS[0], "green": RGB_PINS[1], "blue": RGB_PINS[2]},
        )
        with trio.fail_after(TIMEOUT):
            async with kiosk_with_rgb_light(config, setup) as (k, _pins):
                await k.wait_state(KioskState.IDLE)
                await trio.sleep(0.3)  # let the visitor start talking before the press
                await click(_pins)
                conv = await sim.wait_for_conversation(0)
                await sim.wait_for(lambda: bool(conv.turns))
                while not k.kiosk.board.status.agent_speaking:
                    await trio.sleep(0.01)
                while k.kiosk.board.status.agent_speaking:
                    await trio.sleep(0.01)
                await click(_pins)
                await sim.wait_for(lambda: not conv.open)
                await k.wait_state(KioskState.IDLE)
                await trio.sleep(0.2)
                led = list(k.kiosk.leds.history)

    # ---- the observation saw every chunk the agent got (at most one more, cut off at the end)
    received = [(t, m.user_audio_chunk) for t, m in conv.messages if isinstance(m, UserAudioChunk)]
    assert [c for _, c, _ in sent[: len(received)]] == [c for _, c in received]
    assert len(sent) - len(received) <= 1

    # ---- PRIVACY: microphone audio only ever went out under the listening light
    voiced = [(t, rgb) for t, chunk, rgb in sent if np.frombuffer(chunk, np.int16).any()]
    assert len(voiced) > 20  # the visitor really was heard
    dark = [(t, rgb) for t, rgb in voiced if not shows_listening(rgb)]
    assert dark == []
    # and the light was still on when each chunk arrived at the agent
    assert all(shows_listening(value_at(led, t)) for t, chunk in received if np.frombuffer(chunk, np.int16).any())

    # ---- the light's colour history is the board's state history, change for change
    board_colours = collapse([COLOURS[light_state(s)] for _, s in board])
    led_colours = collapse([c for c in (colour_name(v) for _, v in led) if c is not None])
    assert board_colours == led_colours
    states = collapse([light_state(s) for _, s in board])
    assert states[:3] == [LightState.IDLE, LightState.CONNECTING, LightState.LISTENING]
    assert LightState.SPEAKING in states and states[-1] == LightState.IDLE

    # ---- listening: brightness follows the smoothed vad_score, at most UPDATE_HZ times a second
    vad = [(t, s.vad_score) for t, s in board]
    assert max(conv.vad_scores) > 0.9  # the agent reported speech
    listening = [(t, v) for t, v in led if colour_name(v) == COLOURS[LightState.LISTENING]]
    for t, (_, g, _) in listening:
        seen = [v for vt, v in vad if t - WINDOW < vt <= t] + [value_at(vad, t - WINDOW)]
        score = (g - PRIVACY_MIN_BRIGHTNESS) / LISTEN_SPAN
        slack = OLDER_WEIGHT + QUANTUM / LISTEN_SPAN
        assert min(seen) - slack <= score <= max(seen) + slack, (t, g, seen)
    assert max(g for _, (_, g, _) in listening) > PRIVACY_MIN_BRIGHTNESS + LISTEN_SPAN / 2
    changes = np.array([t for t, _ in board[1:]])
    # writes not made by the board listener (those follow a change within the same step)
    animated = [t for t, _ in led if not np.any((changes <= t) & (t - changes < SAME_STEP))]
    # (on the real clock a late tick makes the next gap short; the rate holds in any second)
    times = np.array(animated)
    assert max(int(np.sum((times >= t) & (times < t + 1.0))) for t in times) <= UPDATE_HZ + 1

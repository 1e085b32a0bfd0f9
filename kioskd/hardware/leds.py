"""Status light: kiosk state → light pattern (pure), and the gpiozero driver.

Patterns (``pattern(state, t, vad_score)``; colour for an RGB LED, brightness = the
largest channel for a single PWM LED):

=============  ======  =======================================================
state          colour  pattern
=============  ======  =======================================================
idle           white   slow breathing, dim: 0.05–0.25 over a 4 s period
connecting     blue    fast blink: 4 Hz, half on
listening      green   steady, 0.3 + 0.7 × smoothed VAD score (never below 0.3)
speaking       cyan    steady, full
reconnecting   amber   double blink every 1.5 s (150 ms on, 150 ms off, 150 ms on)
offline        red     slow blink: 0.5 s on every 2 s
error          red     fast flash: 80 ms on every 250 ms
fault          amber   idle with problems (``Status.problems``): 1 s on, 1 s off
closed         violet  steady, dim (0.15): out of service
=============  ======  =======================================================

Pattern time starts when the state is entered, so every state shows at once (a blink
starts with its "on" phase, breathing with its dimmest level).

PRIVACY RULE: whenever microphone audio is being sent (``Status.mic_live``) the light is
never fully off: :func:`light_value` raises any darker value (a blink's off phase) to the
listening colour at :data:`PRIVACY_MIN_BRIGHTNESS`. The driver writes a new pattern (a new
state, or the microphone going live) synchronously from the board's listener, before the
writer of that change (the session, about to send audio) runs on: a conversation's
first audio never goes out under the previous pattern. Only the animation (blinks,
breathing, the VAD level) is limited to :data:`UPDATE_HZ`.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from kioskd.config import LedConfig
from kioskd.hardware.gpio import GpioUnavailable, open_device
from kioskd.state import KioskState, Status, StatusBoard

__all__ = [
    "EXAMPLE_STATUS",
    "PRIVACY_MIN_BRIGHTNESS",
    "RGB",
    "LedDriver",
    "LedValue",
    "LightState",
    "VadSmoother",
    "brightness",
    "light_state",
    "light_value",
    "pattern",
]

log = logging.getLogger(__name__)

RGB = tuple[float, float, float]
#: What the driver writes: a brightness for a PWM LED, a colour for an RGB LED.
LedValue = float | RGB
OFF: RGB = (0.0, 0.0, 0.0)

#: Lowest brightness while the microphone is live (privacy rule).
PRIVACY_MIN_BRIGHTNESS = 0.3
#: Listening: brightness = PRIVACY_MIN_BRIGHTNESS + LISTEN_SPAN × smoothed VAD score.
LISTEN_SPAN = 1.0 - PRIVACY_MIN_BRIGHTNESS
IDLE_MIN, IDLE_MAX, IDLE_PERIOD = 0.05, 0.25, 4.0
CONNECTING_HZ = 4.0
RECONNECT_PERIOD, RECONNECT_PULSE = 1.5, 0.15
OFFLINE_PERIOD, OFFLINE_ON = 2.0, 0.5
ERROR_PERIOD, ERROR_ON = 0.25, 0.08
FAULT_PERIOD, FAULT_ON = 2.0, 1.0
CLOSED_LEVEL = 0.15
#: Time constant of the VAD score smoothing (seconds to ~63 % of a step).
VAD_TAU = 0.15
#: Driver: at most this many updates a second.
UPDATE_HZ = 30.0
#: Values are rounded to this many steps per channel, so "changed" means visibly changed.
LEVELS = 255
#: How many (t, value) changes the driver keeps for tests and diagnostics.
HISTORY_LEN = 4096


class LightState(enum.StrEnum):
    """What the light shows."""

    IDLE = "idle"
    CONNECTING = "connecting"
    LISTENING = "listening"
    SPEAKING = "speaking"  # the agent is speaking
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"
    ERROR = "error"
    FAULT = "fault"  # idle, but something is broken (a missing microphone, a dead button…)
    CLOSED = "closed"


COLOURS: dict[LightState, RGB] = {
    LightState.IDLE: (1.0, 1.0, 1.0),
    LightState.CONNECTING: (0.0, 0.3, 1.0),
    LightState.LISTENING: (0.0, 1.0, 0.0),
    LightState.SPEAKING: (0.0, 1.0, 1.0),
    LightState.RECONNECTING: (1.0, 0.5, 0.0),
    LightState.OFFLINE: (1.0, 0.0, 0.0),
    LightState.ERROR: (1.0, 0.0, 0.0),
    LightState.FAULT: (1.0, 0.5, 0.0),
    LightState.CLOSED: (0.6, 0.0, 1.0),
}

#: One status per light state (``kioskd test-leds`` and tests).
EXAMPLE_STATUS: dict[LightState, Status] = {
    LightState.IDLE: Status(),
    LightState.CONNECTING: Status(state=KioskState.CONNECTING),
    LightState.LISTENING: Status(state=KioskState.CONVERSATION, mic_live=True),
    LightState.SPEAKING: Status(state=KioskState.CONVERSATION, agent_speaking=True, mic_live=True),
    LightState.RECONNECTING: Status(state=KioskState.RECONNECTING),
    LightState.OFFLINE: Status(state=KioskState.OFFLINE),
    LightState.ERROR: Status(state=KioskState.ERROR),
    LightState.FAULT: Status(problems=("the microphone is missing",)),
    LightState.CLOSED: Status(state=KioskState.CLOSED),
}


def light_state(status: Status) -> LightState:
    """Which pattern a status shows; in a conversation, speaking wins over listening."""
    if status.state == KioskState.CONVERSATION:
        return LightState.SPEAKING if status.agent_speaking else LightState.LISTENING
    if status.state == KioskState.IDLE and status.problems:
        return LightState.FAULT
    return {
        KioskState.IDLE: LightState.IDLE,
        KioskState.CONNECTING: LightState.CONNECTING,
        KioskState.RECONNECTING: LightState.RECONNECTING,
        KioskState.OFFLINE: LightState.OFFLINE,
        KioskState.ERROR: LightState.ERROR,
        KioskState.CLOSED: LightState.CLOSED,
    }[status.state]


def _level(state: LightState, t: float, vad_score: float) -> float:
    """Brightness 0–1 of ``state`` at time ``t``."""
    if state == LightState.IDLE:
        phase = (1.0 - math.cos(2.0 * math.pi * t / IDLE_PERIOD)) / 2.0
        return IDLE_MIN + (IDLE_MAX - IDLE_MIN) * phase
    if state == LightState.CONNECTING:
        return 1.0 if (t * CONNECTING_HZ) % 1.0 < 0.5 else 0.0
    if state == LightState.LISTENING:
        return PRIVACY_MIN_BRIGHTNESS + LISTEN_SPAN * min(1.0, max(0.0, vad_score))
    if state == LightState.SPEAKING:
        return 1.0
    if state == LightState.RECONNECTING:
        x = t % RECONNECT_PERIOD
        return 1.0 if x < RECONNECT_PULSE or 2 * RECONNECT_PULSE <= x < 3 * RECONNECT_PULSE else 0.0
    if state == LightState.OFFLINE:
        return 1.0 if t % OFFLINE_PERIOD < OFFLINE_ON else 0.0
    if state == LightState.FAULT:
        return 1.0 if t % FAULT_PERIOD < FAULT_ON else 0.0
    if state == LightState.CLOSED:
        return CLOSED_LEVEL
    return 1.0 if t % ERROR_PERIOD < ERROR_ON else 0.0


def pattern(state: LightState, t: float, vad_score: float = 0.0) -> RGB:
    """The colour (0–1 per channel) ``state`` shows at time ``t``; ``vad_score`` is already smoothed."""
    level = _level(state, t, vad_score)
    r, g, b = COLOURS[state]
    return (r * level, g * level, b * level)


def brightness(rgb: RGB) -> float:
    """Single-LED brightness of a colour: its largest channel."""
    return max(rgb)


def light_value(status: Status, t: float, vad_score: float) -> RGB:
    """The pattern for ``status`` with the privacy rule applied (never off while ``mic_live``)."""
    rgb = pattern(light_state(status), t, vad_score)
    if status.mic_live and brightness(rgb) < PRIVACY_MIN_BRIGHTNESS:
        r, g, b = COLOURS[LightState.LISTENING]
        return (r * PRIVACY_MIN_BRIGHTNESS, g * PRIVACY_MIN_BRIGHTNESS, b * PRIVACY_MIN_BRIGHTNESS)
    return rgb


class VadSmoother:
    """Exponential smoothing with time constant ``tau``: ``update(value, now) -> smoothed``."""

    def __init__(self, tau: float = VAD_TAU) -> None:
        self.tau = tau
        self.value = 0.0
        self._last: float | None = None

    def update(self, value: float, now: float) -> float:
        """Move towards ``value`` by ``1 - exp(-dt / tau)`` of the way."""
        if self._last is None or self.tau <= 0:
            self.value = value
        else:
            dt = max(0.0, now - self._last)
            self.value += (value - self.value) * (1.0 - math.exp(-dt / self.tau))
        self._last = now
        return self.value


def _quantise(rgb: RGB, scale: float) -> RGB:
    r, g, b = (round(min(1.0, max(0.0, c * scale)) * LEVELS) / LEVELS for c in rgb)
    return (r, g, b)


class LedDriver:
    """Shows the :class:`StatusBoard` on a PWM or RGB LED, at most ``UPDATE_HZ`` times a second.

    ``history`` keeps the last ``HISTORY_LEN`` writes as ``(trio time, value)`` — a brightness
    (pwm) or a colour (rgb), already scaled by ``leds.brightness``; ``on_change`` (optional) is
    called with the same. A new pattern (state or ``mic_live`` change) is written from the
    board's listener at once; animation follows within one update period.
    Wire it with ``await nursery.start(LedDriver(config.leds, board).run)``.
    """

    def __init__(
        self,
        config: LedConfig,
        board: StatusBoard,
        *,
        pin_factory: Any = None,
        on_change: Callable[[float, LedValue], None] | None = None,
    ) -> None:
        self.config = config
        self.board = board
        self.pin_factory = pin_factory
        self.on_change = on_change
        self.history: deque[tuple[float, LedValue]] = deque(maxlen=HISTORY_LEN)
        self.available = False  # a light is open and being driven
        self.unavailable_reason = ""  # why not, when the GPIO could not be opened
        self.smoother = VadSmoother()
        self._device: Any = None
        self._last: LedValue | None = None
        self._shown: tuple[LightState, bool] | None = None  # (pattern, mic_live) on the light now
        self._entered = 0.0  # when the current pattern started (its time origin)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the light until cancelled (then turn it off and close it)."""
        if self.config.kind == "none":
            task_status.started()
            await trio.sleep_forever()
        try:
            self._device = self._open()
        except GpioUnavailable as exc:
            self.unavailable_reason = str(exc)
            log.warning("status light unavailable: %s; running without a light", self.unavailable_reason)
        if self._device is None:
            task_status.started()
            await trio.sleep_forever()
        self.available = True
        log.info("status light ready kind=%s", self.config.kind)
        unlisten = self.board.listen(self._on_status)
        try:
            task_status.started()
            period = 1.0 / UPDATE_HZ
            next_tick = trio.current_time()
            while True:
                self.tick(trio.current_time())
                next_tick = max(next_tick + period, trio.current_time())
                await trio.sleep_until(next_tick)
        finally:
            unlisten()
            device, self._device = self._device, None
            self.available = False
            try:
                device.off()
            finally:
                device.close()

    def tick(self, now: float) -> LedValue:
        """Compute the value for ``now`` and write it if it changed; returns it."""
        status = self.board.status
        shown = (light_state(status), status.mic_live)
        if self._shown is None or shown[0] != self._shown[0]:
            self._entered = now  # a new pattern starts from its beginning
        self._shown = shown
        vad = self.smoother.update(status.vad_score, now)
        rgb = _quantise(light_value(status, now - self._entered, vad), self.config.brightness)
        value: LedValue = rgb if self.config.kind == "rgb" else brightness(rgb)
        if value != self._last:
            self._last = value
            self._write(value)
            self.history.append((now, value))
            if self.on_change is not None:
                self.on_change(now, value)
        return value

    def _on_status(self, status: Status) -> None:
        """Board listener (Trio thread): a new pattern or the microphone going live shows at once."""
        if self._device is not None and (light_state(status), status.mic_live) != self._shown:
            self.tick(trio.current_time())

    def _write(self, value: LedValue) -> None:
        if self._device is not None:
            self._device.value = value

    def _open(self) -> Any:
        c = self.config
        if c.kind == "rgb":
            pins = (c.red, c.green, c.blue)
            return open_device("RGBLED", *pins, pin_factory=self.pin_factory, active_high=c.active_high)
        return open_device("PWMLED", c.pin, pin_factory=self.pin_factory, active_high=c.active_high)

"""LEDs: pure state → pattern logic, the privacy rule, smoothing, and the driver on mock PWM pins."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from gpiozero.exc import BadPinFactory
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import given
from hypothesis import strategies as st

from kioskd.config import DEFAULT_CONFIG, LedConfig
from kioskd.hardware.checks import test_leds_main
from kioskd.hardware.leds import (
    EXAMPLE_STATUS,
    IDLE_MAX,
    IDLE_MIN,
    IDLE_PERIOD,
    LEVELS,
    OFFLINE_ON,
    OFFLINE_PERIOD,
    PRIVACY_MIN_BRIGHTNESS,
    RECONNECT_PERIOD,
    UPDATE_HZ,
    VAD_TAU,
    LedDriver,
    LightState,
    VadSmoother,
    brightness,
    light_state,
    light_value,
    pattern,
)
from kioskd.state import KioskState, Status, StatusBoard

PIN = 18
TEST_TIMEOUT = 10.0
STEP = 0.001  # sampling step for pattern shape checks
QUANTUM = 1.0 / LEVELS


# --------------------------------------------------------------------------- pure patterns


def test_every_light_state_has_an_example_status() -> None:
    assert {light_state(status) for status in EXAMPLE_STATUS.values()} == set(LightState)
    for state, status in EXAMPLE_STATUS.items():
        assert light_state(status) == state


def test_conversation_speaking_wins_over_listening() -> None:
    assert light_state(Status(state=KioskState.CONVERSATION)) == LightState.LISTENING
    assert light_state(Status(state=KioskState.CONVERSATION, agent_speaking=True)) == LightState.SPEAKING


def samples(state: LightState, seconds: float, vad: float = 0.0) -> list[float]:
    return [brightness(pattern(state, i * STEP, vad)) for i in range(int(seconds / STEP))]


def rising_edges(levels: list[float]) -> int:
    return sum(1 for a, b in itertools.pairwise(levels) if a == 0.0 and b > 0.0)


def test_idle_breathes_dimly() -> None:
    levels = samples(LightState.IDLE, IDLE_PERIOD)
    assert min(levels) == pytest.approx(IDLE_MIN, abs=1e-3)
    assert max(levels) == pytest.approx(IDLE_MAX, abs=1e-3)


def test_blink_patterns() -> None:
    # connecting: fast blink, 4 per second; offline: slow, 1 per 2 s; error: 4 per second, short
    assert rising_edges(samples(LightState.CONNECTING, 1.0)) in (3, 4)
    assert rising_edges(samples(LightState.OFFLINE, 4.0)) in (1, 2)
    error = samples(LightState.ERROR, 1.0)
    assert rising_edges(error) in (3, 4)
    assert sum(1 for x in error if x > 0) / len(error) < 0.4  # a flash, not a blink
    # reconnecting: two pulses per period
    assert rising_edges(samples(LightState.RECONNECTING, RECONNECT_PERIOD)) + 1 == 2  # first pulse starts at t=0


def test_listening_follows_vad_and_speaking_is_full() -> None:
    assert brightness(pattern(LightState.LISTENING, 0.0, 0.0)) == pytest.approx(PRIVACY_MIN_BRIGHTNESS)
    assert brightness(pattern(LightState.LISTENING, 0.0, 0.5)) == pytest.approx(0.65)
    assert brightness(pattern(LightState.LISTENING, 0.0, 1.0)) == pytest.approx(1.0)
    assert brightness(pattern(LightState.LISTENING, 0.0, 7.0)) == pytest.approx(1.0)  # clamped
    assert set(samples(LightState.SPEAKING, 1.0)) == {1.0}


@given(
    state=st.sampled_from(list(KioskState)),
    speaking=st.booleans(),
    t=st.floats(0, 1e5, allow_nan=False),
    vad=st.floats(-1, 2, allow_nan=False),
)
def test_privacy_rule_never_off_while_mic_live(state: KioskState, speaking: bool, t: float, vad: float) -> None:
    status = Status(state=state, agent_speaking=speaking, mic_live=True)
    assert brightness(light_value(status, t, vad)) >= PRIVACY_MIN_BRIGHTNESS - 1e-12


def test_blinks_go_dark_when_mic_is_not_live() -> None:
    status = EXAMPLE_STATUS[LightState.RECONNECTING]
    assert min(brightness(light_value(status, i * STEP, 0.0)) for i in range(1500)) == 0.0


def test_smoother_time_constant() -> None:
    smoother = VadSmoother(tau=VAD_TAU)
    assert smoother.update(0.0, 0.0) == 0.0
    assert smoother.update(1.0, VAD_TAU) == pytest.approx(1 - math.exp(-1))
    # the same time in many small steps gives the same result
    fine = VadSmoother(tau=VAD_TAU)
    fine.update(0.0, 0.0)
    for i in range(1, 101):
        value = fine.update(1.0, VAD_TAU * i / 100)
    assert value == pytest.approx(1 - math.exp(-1))


# --------------------------------------------------------------------------- driver on mock pins


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.close()


@asynccontextmanager
async def driving(driver: LedDriver) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        yield
        nursery.cancel_scope.cancel()


def level(value: float | tuple[float, float, float]) -> float:
    return value if isinstance(value, float) else brightness(value)


def pin_values(factory: MockFactory, pin: int = PIN) -> list[float]:
    return [float(s.state) for s in factory.pin(pin).states]


async def test_pwm_pin_follows_status_changes(factory: MockFactory, autojump_clock: trio.testing.MockClock) -> None:
    board = StatusBoard()
    driver = LedDriver(LedConfig(kind="pwm", pin=PIN), board, pin_factory=factory)
    with trio.fail_after(TEST_TIMEOUT):
        async with driving(driver):
            assert driver.available
            await trio.sleep(1.0)  # idle breathing
            idle = [level(v) for _, v in driver.history]
            assert all(IDLE_MIN - QUANTUM <= b <= IDLE_MAX + QUANTUM for b in idle)
            board.update(state=KioskState.CONVERSATION, agent_speaking=True, mic_live=True)
            await trio.sleep(0.1)
            n = len(driver.history)
            assert level(driver.history[-1][1]) == 1.0
            await trio.sleep(1.0)
            assert len(driver.history) == n  # steady: nothing written
            board.update(state=KioskState.OFFLINE, agent_speaking=False, mic_live=False)
            await trio.sleep(OFFLINE_PERIOD + OFFLINE_ON / 2)
            assert {level(v) for _, v in list(driver.history)[n:]} == {0.0, 1.0}
        # the mock pin saw exactly the driver's changes, then off at the end
        written = [level(v) for _, v in driver.history]
        assert pin_values(factory)[1:] == pytest.approx(written + ([0.0] if written[-1] else []))


async def test_at_most_update_hz(factory: MockFactory, autojump_clock: trio.testing.MockClock) -> None:
    board = StatusBoard()
    board.update(state=KioskState.CONVERSATION, mic_live=True)
    driver = LedDriver(LedConfig(kind="pwm", pin=PIN), board, pin_factory=factory)
    seconds = 3.0
    with trio.fail_after(TEST_TIMEOUT):
        async with driving(driver):
            for i in range(int(seconds * 1000)):  # a VAD score changing every millisecond
                board.update(vad_score=(i % 100) / 100)
                await trio.sleep(0.001)
    times = [t for t, _ in driver.history]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) > seconds * UPDATE_HZ / 2  # it did follow
    assert min(gaps) >= 1.0 / UPDATE_HZ - 1e-9


async def test_new_pattern_is_written_at_once_and_starts_on(
    factory: MockFactory, autojump_clock: trio.testing.MockClock
) -> None:
    board = StatusBoard()
    driver = LedDriver(LedConfig(kind="rgb"), board, pin_factory=factory)
    with trio.fail_after(TEST_TIMEOUT):
        async with driving(driver):
            await trio.sleep(0.4 / UPDATE_HZ)  # between two animation ticks
            idle, *others = EXAMPLE_STATUS.values()  # the board starts idle
            for status in [*others, idle]:
                board.update(state=status.state, agent_speaking=status.agent_speaking, mic_live=status.mic_live,
                             problems=status.problems)
                # on the pins before update() returned (the board listener wrote it), at the
                # pattern's beginning: a blink starts with its "on" phase
                on_pins = tuple(float(factory.pin(p).state) for p in (5, 6, 13))
                assert on_pins == pytest.approx(light_value(status, 0.0, 0.0), abs=QUANTUM)
                assert max(on_pins) > 0.0
                await trio.sleep(0.3 / UPDATE_HZ)


async def test_brightness_follows_vad_and_never_off_while_mic_live(
    factory: MockFactory, autojump_clock: trio.testing.MockClock
) -> None:
    board = StatusBoard()
    driver = LedDriver(LedConfig(kind="pwm", pin=PIN), board, pin_factory=factory)
    with trio.fail_after(TEST_TIMEOUT):
        async with driving(driver):
            before = len(driver.history)
            board.update(state=KioskState.CONVERSATION, mic_live=True, vad_score=0.0)
            live_from = trio.current_time()
            await trio.sleep(0.5)
            assert level(driver.history[-1][1]) == pytest.approx(PRIVACY_MIN_BRIGHTNESS, abs=QUANTUM)
            start = len(driver.history)
            board.update(vad_score=1.0)
            await trio.sleep(1.0)
            rise = [level(v) for _, v in list(driver.history)[start:]]
            assert rise == sorted(rise) and len(rise) > 3  # a smooth rise, not a jump
            assert rise[-1] == pytest.approx(1.0, abs=QUANTUM)
            board.update(vad_score=0.0)
            await trio.sleep(1.0)
            assert level(driver.history[-1][1]) == pytest.approx(PRIVACY_MIN_BRIGHTNESS, abs=QUANTUM)
            board.update(state=KioskState.RECONNECTING)  # blinks, but the mic is still live
            await trio.sleep(2 * RECONNECT_PERIOD)
            board.update(mic_live=False)
            live_until = trio.current_time()
            await trio.sleep(RECONNECT_PERIOD)
    # the listening light came on at once, with the board change
    live = [(t, level(v)) for t, v in list(driver.history)[before:] if t < live_until]
    assert live[0][0] == live_from
    lit = [b for _, b in live]
    dead = [level(v) for t, v in driver.history if t > live_until]
    assert min(lit) >= PRIVACY_MIN_BRIGHTNESS - QUANTUM
    assert 1.0 in lit  # the reconnecting blink still showed while the mic was live
    assert min(dead) == 0.0  # and the same blink goes dark once the mic is off


async def test_rgb_led_and_active_low(factory: MockFactory, autojump_clock: trio.testing.MockClock) -> None:
    board = StatusBoard()
    board.update(state=KioskState.CONVERSATION, agent_speaking=True)
    config = LedConfig(kind="rgb", red=5, green=6, blue=13, active_high=False, brightness=0.5)
    driver = LedDriver(config, board, pin_factory=factory)
    with trio.fail_after(TEST_TIMEOUT):
        async with driving(driver):
            await trio.sleep(0.1)
            assert driver.history[-1][1] == pytest.approx((0.0, 0.5, 0.5), abs=QUANTUM)
            # active low: the pin carries 1 - value
            assert factory.pin(5).state == pytest.approx(1.0)
            assert factory.pin(6).state == pytest.approx(0.5, abs=QUANTUM)
            assert factory.pin(13).state == pytest.approx(0.5, abs=QUANTUM)


class _NoGpio:
    """A pin factory that behaves like a PC: every use raises BadPinFactory."""

    def __getattr__(self, name: str) -> Any:
        raise BadPinFactory("Unable to load any default pin factory!")


async def test_no_gpio_runs_without_a_light(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kioskd.hardware.leds")
    driver = LedDriver(LedConfig(kind="pwm"), StatusBoard(), pin_factory=_NoGpio())
    with trio.fail_after(TEST_TIMEOUT):
        async with driving(driver):
            await trio.sleep(0.05)
            assert not driver.available
    reason = driver.unavailable_reason or ""
    assert reason.startswith("no working GPIO pin factory: Unable to load any default pin factory. "), reason
    assert [r.getMessage() for r in caplog.records] == [f"status light unavailable: {reason}; running without a light"]


def test_test_leds_prints_every_pattern(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[agent]\nagent_id = "x"\n[leds]\nkind = "none"\n')
    assert test_leds_main(["--config", str(config), "--seconds-per-pattern", "0.02"]) == 0
    out = capsys.readouterr().out
    for state in LightState:
        assert f"\n{state}: " in "\n" + out


def test_test_leds_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[agent]\nagent_id = "x"\n[leds]\nkind = "pwm"\nbrightness = 2.0\n')
    assert test_leds_main(["--config", str(config)]) == 2
    assert "leds.brightness" in capsys.readouterr().err


def test_test_leds_reads_the_daemons_config_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        test_leds_main(["--help"])
    assert f"default: {DEFAULT_CONFIG} if it exists" in " ".join(capsys.readouterr().out.split())
    assert DEFAULT_CONFIG == "/etc/kioskd/config.toml"

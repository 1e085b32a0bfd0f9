"""Button: the pure press/release/held logic in virtual time, and the gpiozero adapter on mock pins."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from gpiozero.exc import BadPinFactory
from gpiozero.pins.mock import MockFactory

from kioskd.config import ButtonConfig
from kioskd.hardware.button import ButtonLogic, ButtonTrigger
from kioskd.hardware.handoff import ToTrio
from kioskd.state import Command

PIN = 17
BOUNCE = 0.05
LONG = 3.0
TEST_TIMEOUT = 10.0


# --------------------------------------------------------------------------- pure logic


def test_toggle_short_press_toggles_on_release() -> None:
    logic = ButtonLogic("toggle", LONG, BOUNCE)
    assert logic.press(10.0) == []
    assert logic.release(10.3) == [Command.TOGGLE]
    assert logic.press(11.0) == []
    assert logic.release(11.2) == [Command.TOGGLE]


def test_toggle_long_press_ends_and_release_does_not_toggle() -> None:
    logic = ButtonLogic("toggle", LONG, BOUNCE)
    logic.press(10.0)
    assert logic.held(10.0 + LONG) == [Command.END]
    assert logic.held(10.0 + 2 * LONG) == []  # only once per press
    assert logic.release(15.0) == []
    assert logic.press(16.0) == []
    assert logic.release(16.2) == [Command.TOGGLE]  # the next short press toggles again


def test_toggle_long_press_without_held_report_still_ends() -> None:
    logic = ButtonLogic("toggle", LONG, BOUNCE)
    logic.press(10.0)
    assert logic.release(10.0 + LONG + 0.5) == [Command.END]


def test_stale_held_report_is_ignored() -> None:
    logic = ButtonLogic("toggle", LONG, BOUNCE)
    logic.press(10.0)
    assert logic.held(10.5) == []  # far too early for this press
    assert logic.release(10.6) == [Command.TOGGLE]
    assert logic.held(13.0) == []  # not pressed any more


def test_hold_mode_push_to_talk() -> None:
    logic = ButtonLogic("hold", LONG, BOUNCE)
    assert logic.press(10.0) == [Command.START, Command.MIC_ON]
    assert logic.release(12.0) == [Command.MIC_OFF]
    assert logic.press(13.0) == [Command.START, Command.MIC_ON]
    # holding longer than long_press while talking does not end the conversation
    assert logic.held(13.0 + LONG) == []
    assert logic.release(20.0) == [Command.MIC_OFF]


def test_hold_mode_long_press_can_end_when_enabled() -> None:
    logic = ButtonLogic("hold", LONG, BOUNCE, long_press_ends_in_hold=True)
    assert logic.press(10.0) == [Command.START, Command.MIC_ON]
    assert logic.held(10.0 + LONG) == [Command.MIC_OFF, Command.END]
    assert logic.release(14.0) == []


def test_bounce_gives_one_press_and_settle_reads_the_pin() -> None:
    logic = ButtonLogic("toggle", LONG, BOUNCE)
    assert logic.press(10.000) == []
    # contact chatter inside the debounce window is held back
    assert logic.release(10.005) == []
    assert logic.press(10.010) == []
    assert logic.settle_at == pytest.approx(10.0 + BOUNCE)
    assert logic.settle(10.0 + BOUNCE, pressed=True) == []  # still down: nothing happened
    assert logic.settle_at is None
    assert logic.release(10.4) == [Command.TOGGLE]


def test_short_tap_inside_bounce_window_is_not_lost() -> None:
    logic = ButtonLogic("hold", LONG, BOUNCE)
    assert logic.press(10.000) == [Command.START, Command.MIC_ON]
    assert logic.release(10.020) == []  # held back …
    assert logic.settle(10.0 + BOUNCE, pressed=False) == [Command.MIC_OFF]  # … but the mic goes off


def test_duplicate_edges_are_ignored() -> None:
    logic = ButtonLogic("hold", LONG, BOUNCE)
    assert logic.press(10.0) == [Command.START, Command.MIC_ON]
    assert logic.press(10.5) == []
    assert logic.release(11.0) == [Command.MIC_OFF]
    assert logic.release(11.5) == []


# --------------------------------------------------------------------------- gpiozero adapter


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.close()


@asynccontextmanager
async def running(trigger: ButtonTrigger) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(trigger.run)
        yield
        nursery.cancel_scope.cancel()


def make(factory: MockFactory, **config: Any) -> tuple[ButtonTrigger, list[Command]]:
    sent: list[Command] = []
    cfg = ButtonConfig(pin=PIN, **config)
    return ButtonTrigger(cfg, sent.append, pin_factory=factory), sent


async def test_toggle_through_mock_pin(factory: MockFactory, autojump_clock: trio.testing.MockClock) -> None:
    trigger, sent = make(factory, mode="toggle")
    pin = factory.pin(PIN)
    with trio.fail_after(TEST_TIMEOUT):
        async with running(trigger):
            assert trigger.available
            pin.drive_low()
            await trio.sleep(0.2)
            assert sent == []
            pin.drive_high()
            await trio.sleep(0.2)
            assert sent == [Command.TOGGLE]
    assert trigger._button is None  # closed on cancellation


async def test_hold_through_mock_pin(factory: MockFactory, autojump_clock: trio.testing.MockClock) -> None:
    trigger, sent = make(factory, mode="hold", pull_up=True)
    pin = factory.pin(PIN)
    with trio.fail_after(TEST_TIMEOUT):
        async with running(trigger):
            pin.drive_low()
            await trio.sleep(0.2)
            assert sent == [Command.START, Command.MIC_ON]
            pin.drive_high()
            await trio.sleep(0.2)
            assert sent == [Command.START, Command.MIC_ON, Command.MIC_OFF]


async def test_pull_down_button(factory: MockFactory, autojump_clock: trio.testing.MockClock) -> None:
    trigger, sent = make(factory, mode="hold", pull_up=False)
    pin = factory.pin(PIN)
    with trio.fail_after(TEST_TIMEOUT):
        async with running(trigger):
            pin.drive_high()
            await trio.sleep(0.2)
            pin.drive_low()
            await trio.sleep(0.2)
            assert sent == [Command.START, Command.MIC_ON, Command.MIC_OFF]


async def test_bounce_through_mock_pin(factory: MockFactory, autojump_clock: trio.testing.MockClock) -> None:
    trigger, sent = make(factory, mode="hold", bounce_ms=50)
    pin = factory.pin(PIN)
    with trio.fail_after(TEST_TIMEOUT):
        async with running(trigger):
            # chatter on press: low/high/low within a few (virtual) milliseconds
            pin.drive_low()
            await trio.sleep(0.005)
            pin.drive_high()
            await trio.sleep(0.005)
            pin.drive_low()
            await trio.sleep(0.2)
            assert sent == [Command.START, Command.MIC_ON]
            # a release chattering back to "pressed" and finally released inside the window
            pin.drive_high()
            await trio.sleep(0.3)
            sent.clear()
            pin.drive_low()
            await trio.sleep(0.01)
            pin.drive_high()  # 10 ms tap: inside the debounce window
            await trio.sleep(0.2)
            assert sent == [Command.START, Command.MIC_ON, Command.MIC_OFF]


async def test_long_press_is_timed_on_the_trio_side_exactly(
    factory: MockFactory, autojump_clock: trio.testing.MockClock
) -> None:
    """The long press is timed by Trio (no gpiozero hold thread): END at long_press, once."""
    trigger, sent = make(factory, mode="toggle", long_press=LONG)
    pin = factory.pin(PIN)
    with trio.fail_after(TEST_TIMEOUT):
        async with running(trigger):
            pin.drive_low()
            await trio.sleep(LONG - 0.01)
            assert sent == []
            await trio.sleep(0.02)
            assert sent == [Command.END]
            await trio.sleep(LONG)
            pin.drive_high()
            await trio.sleep(0.1)
            assert sent == [Command.END]  # once, and the release sends nothing
            pin.drive_low()  # the next press is timed afresh
            await trio.sleep(0.1)
            pin.drive_high()
            await trio.sleep(0.1)
            assert sent == [Command.END, Command.TOGGLE]


async def test_hold_mode_long_press_through_mock_pin(
    factory: MockFactory, autojump_clock: trio.testing.MockClock
) -> None:
    trigger, sent = make(factory, mode="hold", long_press=LONG)
    pin = factory.pin(PIN)
    with trio.fail_after(TEST_TIMEOUT):
        async with running(trigger):
            pin.drive_low()
            await trio.sleep(3 * LONG)  # push-to-talk: holding while speaking does not end
            pin.drive_high()
            await trio.sleep(0.1)
            assert sent == [Command.START, Command.MIC_ON, Command.MIC_OFF]


async def test_no_thread_of_gpiozero_wakes_while_the_button_rests(factory: MockFactory) -> None:
    """gpiozero's Button starts a hold thread that polls ten times a second forever: not used."""
    trigger, _ = make(factory, mode="toggle")
    before = {t.name for t in threading.enumerate()}
    async with running(trigger):
        added = {t.name for t in threading.enumerate()} - before
        assert not any("Hold" in type(t).__name__ for t in threading.enumerate()), added


async def test_press_after_run_finished_is_swallowed(factory: MockFactory) -> None:
    trigger, sent = make(factory, mode="toggle")

    token_holder: list[Any] = []

    async def capture() -> None:
        token_holder.append(trio.lowlevel.current_trio_token())

    await trio.to_thread.run_sync(lambda: trio.run(capture))
    trigger._to_trio = ToTrio(token_holder[0])  # the hand-off of a run that has ended
    trigger._from_gpio(trigger._on_press)  # must not raise
    assert sent == [] and not trigger._to_trio.alive


class _NoGpio:
    """A pin factory that behaves like a PC: every use raises BadPinFactory."""

    def __getattr__(self, name: str) -> Any:
        raise BadPinFactory("Unable to load any default pin factory!")


async def test_no_gpio_logs_once_and_keeps_running(caplog: pytest.LogCaptureFixture) -> None:
    trigger = ButtonTrigger(ButtonConfig(pin=PIN), lambda c: None, pin_factory=_NoGpio())
    caplog.set_level(logging.WARNING, logger="kioskd.hardware.button")
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(trigger.run)
            await trio.sleep(0.05)
            assert not trigger.available
            nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    reason = trigger.unavailable_reason or ""
    assert reason.startswith("no working GPIO pin factory: Unable to load any default pin factory. "), reason
    assert "python3-lgpio" in reason
    assert lines == [f"button unavailable pin={PIN}: {reason}"]

"""The GPIO button: presses become :class:`~kioskd.state.Command` values for the supervisor.

Two layers:

* :class:`ButtonLogic` is pure: ``press(now)`` / ``release(now)`` / ``held(now)`` /
  ``settle(now, pressed)`` return the commands to send. It holds the mode rules, the
  long press and a software debounce guard. Time is passed in.
* :class:`ButtonTrigger` is the gpiozero adapter. gpiozero calls its callbacks on its own
  thread; they only hand the edge to Trio with ``run_sync_soon`` (never blocking the GPIO
  thread), and the Trio side timestamps it with ``trio.current_time()`` and asks the logic.
  The pin is a plain ``DigitalInputDevice``: gpiozero's ``Button`` starts a hold thread per
  button that wakes ten times a second for the life of the daemon, so the long press is
  timed on the Trio side instead (:attr:`ButtonLogic.held_at`), in virtual time in tests.

Modes (``button.mode``):

* ``toggle``: a short press sends ``TOGGLE`` **on release**. Deciding on release is what
  lets a long press mean "end" without first toggling: a press held ``long_press``
  seconds sends ``END`` (at :attr:`ButtonLogic.held_at`, or at the release if that moment
  was missed) and its release sends nothing. The microphone pre-roll covers the press time.
* ``hold`` (push-to-talk): press → ``START`` then ``MIC_ON``; release → ``MIC_OFF``; the
  conversation stays open. A push-to-talk user holds the button while speaking, often
  longer than ``long_press``, so by default a long press does **not** end the
  conversation in this mode (``long_press_ends_in_hold=True`` makes it send ``MIC_OFF``,
  ``END``, and nothing at the release).

Debounce: gpiozero's ``bounce_time`` (``bounce_ms``) filters at the pin; on top, an edge
that arrives within ``bounce_ms`` of the last accepted edge is not acted on at once. The
logic then asks for a :meth:`ButtonLogic.settle` at :attr:`ButtonLogic.settle_at`, where
the real pin level decides, so a bouncing contact gives one press and a very short tap
is never lost (in hold mode the microphone is never left on).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from kioskd.hardware.config import ButtonConfig, ButtonMode
from kioskd.hardware.gpio import GpioUnavailable, open_device
from kioskd.hardware.handoff import ToTrio
from kioskd.state import Command

if TYPE_CHECKING:
    from gpiozero import DigitalInputDevice

__all__ = ["ButtonLogic", "ButtonTrigger", "FeedbackButtons"]

log = logging.getLogger(__name__)

#: A held report this much earlier than ``long_press`` after the press still counts.
HELD_SLACK = 0.25


class ButtonLogic:
    """Pure press/release/held → commands decision, with a software debounce guard.

    ``now`` is any monotonic time in seconds (the adapter uses ``trio.current_time()``).
    """

    def __init__(
        self,
        mode: ButtonMode,
        long_press: float,
        bounce: float,
        *,
        long_press_ends_in_hold: bool = False,
    ) -> None:
        self.mode = mode
        self.long_press = long_press
        self.bounce = bounce
        self.long_press_ends_in_hold = long_press_ends_in_hold
        self.pressed = False  # debounced level
        self._raw_pressed = False  # level of the last edge seen
        self._last_edge = -math.inf  # time of the last accepted edge
        self._pressed_at = -math.inf
        self._long = False  # the current press has already counted as a long press
        #: When not None, call :meth:`settle` at this time: an edge was held back.
        self.settle_at: float | None = None

    # ------------------------------------------------------------------ edges

    def press(self, now: float) -> list[Command]:
        """The contact closed (gpiozero ``when_activated``)."""
        return self._edge(True, now)

    def release(self, now: float) -> list[Command]:
        """The contact opened (gpiozero ``when_deactivated``)."""
        return self._edge(False, now)

    @property
    def held_at(self) -> float | None:
        """When the current press becomes a long press that means something (then call :meth:`held`)."""
        if not self.pressed or self._long or (self.mode == "hold" and not self.long_press_ends_in_hold):
            return None
        return self._pressed_at + self.long_press

    def held(self, now: float) -> list[Command]:
        """The button has been down ``long_press`` seconds (at :attr:`held_at`)."""
        if not self.pressed or self._long:
            return []
        if now - self._pressed_at < self.long_press - HELD_SLACK:
            return []  # a stale report from an earlier press
        return self._long_press()

    def settle(self, now: float, pressed: bool) -> list[Command]:
        """The debounce window is over: act on the real pin level ``pressed``."""
        self.settle_at = None
        self._raw_pressed = pressed
        if pressed == self.pressed:
            return []
        return self._accept(pressed, now)

    # ------------------------------------------------------------------ inside

    def _edge(self, pressed: bool, now: float) -> list[Command]:
        self._raw_pressed = pressed
        if now - self._last_edge < self.bounce:
            self.settle_at = self._last_edge + self.bounce
            return []
        if pressed == self.pressed:
            return []  # a duplicate report
        return self._accept(pressed, now)

    def _accept(self, pressed: bool, now: float) -> list[Command]:
        self.pressed = pressed
        self._last_edge = now
        if pressed:
            self._pressed_at = now
            self._long = False
            return [Command.START, Command.MIC_ON] if self.mode == "hold" else []
        was_long = self._long
        self._long = False
        if was_long:
            return []
        if self.mode == "hold":
            if self.long_press_ends_in_hold and now - self._pressed_at >= self.long_press:
                return [Command.MIC_OFF, Command.END]
            return [Command.MIC_OFF]
        if now - self._pressed_at >= self.long_press:
            return [Command.END]  # the held report was lost: still a long press
        return [Command.TOGGLE]

    def _long_press(self) -> list[Command]:
        if self.mode == "hold":
            if not self.long_press_ends_in_hold:
                return []
            self._long = True
            return [Command.MIC_OFF, Command.END]
        self._long = True
        return [Command.END]


class ButtonTrigger:
    """gpiozero button → commands, delivered on the Trio thread through ``send``.

    Wire it with ``await nursery.start(ButtonTrigger(config.button, supervisor.send).run)``.
    On a machine without GPIO, ``run`` logs once and sleeps; the other triggers still work.
    """

    def __init__(
        self,
        config: ButtonConfig,
        send: Callable[[Command], None],
        *,
        pin_factory: Any = None,
        long_press_ends_in_hold: bool = False,
    ) -> None:
        self.config = config
        self.send = send
        self.pin_factory = pin_factory
        self.logic = ButtonLogic(
            config.mode,
            config.long_press,
            config.bounce_ms / 1000.0,
            long_press_ends_in_hold=long_press_ends_in_hold,
        )
        self.available = False  # True once the button is open
        self.unavailable_reason = ""  # why not, when the GPIO could not be opened
        self._button: DigitalInputDevice | None = None  # strong reference: gpiozero must not lose its callbacks
        self._to_trio: ToTrio | None = None
        self._wakeup = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the button, deliver its commands until cancelled, then close it."""
        self._to_trio = ToTrio()
        try:
            self._button = self._open()
        except GpioUnavailable as exc:
            self.unavailable_reason = str(exc)
            log.warning("button unavailable pin=%d: %s", self.config.pin, exc)
        if self._button is None:
            task_status.started()
            await trio.sleep_forever()
        self.available = True
        log.info("button ready pin=%d mode=%s", self.config.pin, self.config.mode)
        try:
            task_status.started()
            await self._timer_loop()
        finally:
            button, self._button = self._button, None
            self.available = False
            button.when_activated = button.when_deactivated = None
            button.close()

    def _open(self) -> DigitalInputDevice:
        button = open_device(
            "DigitalInputDevice",
            self.config.pin,
            pin_factory=self.pin_factory,
            pull_up=self.config.pull_up,
            bounce_time=(self.config.bounce_ms / 1000.0) or None,
        )
        button.when_activated = lambda *_: self._from_gpio(self._on_press)
        button.when_deactivated = lambda *_: self._from_gpio(self._on_release)
        return button

    def _from_gpio(self, fn: Callable[[], None]) -> None:
        """Called on gpiozero's thread: hand ``fn`` to Trio without waiting."""
        if self._to_trio is not None:
            self._to_trio.post(fn)

    # ------------------------------------------------------------------ Trio thread

    def _on_press(self) -> None:
        self._deliver(self.logic.press(trio.current_time()))

    def _on_release(self) -> None:
        self._deliver(self.logic.release(trio.current_time()))

    def _deliver(self, commands: list[Command]) -> None:
        self._wakeup.set()  # the logic's deadlines may have moved
        for command in commands:
            log.info("button command=%s", command)
            self.send(command)

    async def _timer_loop(self) -> None:
        """Act at the logic's deadlines: re-read the pin after a held-back edge, time a long press."""
        while True:
            due = min((t for t in (self.logic.settle_at, self.logic.held_at) if t is not None), default=math.inf)
            with trio.move_on_at(due):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            now = trio.current_time()
            if (at := self.logic.settle_at) is not None and at <= now:
                pressed = bool(self._button.is_active) if self._button is not None else False
                self._deliver(self.logic.settle(now, pressed))
            if (at := self.logic.held_at) is not None and at <= now:
                self._deliver(self.logic.held(now))



class FeedbackButtons:
    """Optional like/dislike buttons (``button.like_pin`` / ``button.dislike_pin``).

    A press rates the agent's latest answer through ``deliver("feedback", "like"|"dislike")``
    (the supervisor's :meth:`~kioskd.service.supervisor.Supervisor.visitor_message`); outside
    a conversation it is logged and ignored. Debounced by gpiozero's ``bounce_time``.
    """

    def __init__(
        self, config: ButtonConfig, deliver: Callable[[str, str], str | None], *, pin_factory: Any = None
    ) -> None:
        self.config = config
        self.deliver = deliver
        self.pin_factory = pin_factory
        self._buttons: list[Any] = []  # strong references: gpiozero must not lose the callbacks

    @property
    def pins(self) -> dict[str, int]:
        """score → BCM pin, for the buttons configured."""
        wanted = (("like", self.config.like_pin), ("dislike", self.config.dislike_pin))
        return {score: pin for score, pin in wanted if pin >= 0}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the buttons, deliver their presses until cancelled, then close them."""
        to_trio = ToTrio()
        for score, pin in self.pins.items():
            try:
                button = open_device("DigitalInputDevice", pin, pin_factory=self.pin_factory,
                                     pull_up=self.config.pull_up, bounce_time=(self.config.bounce_ms / 1000.0) or None)
            except GpioUnavailable as exc:
                log.warning("feedback button unavailable score=%s pin=%d: %s", score, pin, exc)
                continue
            button.when_activated = lambda *_, score=score: to_trio.post(self._press, score)
            self._buttons.append(button)
            log.info("feedback button ready score=%s pin=%d", score, pin)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            buttons, self._buttons = self._buttons, []
            for button in buttons:
                button.when_activated = None
                button.close()

    def _press(self, score: str) -> None:
        problem = self.deliver("feedback", score)
        if problem is None:
            log.info("feedback button sent score=%s", score)
        else:
            log.info("feedback button ignored score=%s reason=%r", score, problem)

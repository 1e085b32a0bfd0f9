"""gpiozero: the devices kioskd opens (see kioskd/hardware/gpio.py), as far as it uses them."""

from collections.abc import Callable
from typing import Any

Callback = Callable[..., object] | None

class Device:
    def close(self) -> None: ...

class DigitalInputDevice(Device):
    def __init__(
        self,
        pin: int | str | None = ...,
        *,
        pull_up: bool | None = ...,
        active_state: bool | None = ...,
        bounce_time: float | None = ...,
        pin_factory: Any = ...,
    ) -> None: ...
    @property
    def is_active(self) -> bool: ...
    when_activated: Callback
    when_deactivated: Callback

class PWMLED(Device):
    def __init__(
        self,
        pin: int | str | None = ...,
        *,
        active_high: bool = ...,
        initial_value: float = ...,
        frequency: int = ...,
        pin_factory: Any = ...,
    ) -> None: ...
    value: float
    def off(self) -> None: ...

class RGBLED(Device):
    def __init__(
        self,
        red: int | str | None = ...,
        green: int | str | None = ...,
        blue: int | str | None = ...,
        *,
        active_high: bool = ...,
        initial_value: tuple[float, float, float] = ...,
        pwm: bool = ...,
        pin_factory: Any = ...,
    ) -> None: ...
    value: tuple[float, float, float]
    def off(self) -> None: ...

"""gpiozero.pins.mock: the mock pins the tests drive, as far as they use them."""

from typing import Any, NamedTuple

class PinState(NamedTuple):
    timestamp: float
    state: float

class MockPin:
    state: float
    states: list[PinState]
    def drive_low(self) -> None: ...
    def drive_high(self) -> None: ...

class MockPWMPin(MockPin): ...

class MockFactory:
    def __init__(self, revision: str | None = ..., pin_class: type[MockPin] | None = ..., **kwargs: Any) -> None: ...
    def pin(self, spec: int | str, **kwargs: Any) -> MockPin: ...
    def close(self) -> None: ...

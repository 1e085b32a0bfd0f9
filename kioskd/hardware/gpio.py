"""The one gpiozero opener: a device by class name, quietly, or :class:`GpioUnavailable` saying why.

gpiozero is imported only here and only when a device is opened, so a PC without GPIO
(or a broken pin library) cannot break imports; the button and the light then run
without their hardware and say so once.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal, overload

if TYPE_CHECKING:
    from gpiozero import PWMLED, RGBLED, DigitalInputDevice

__all__ = ["GpioUnavailable", "open_device"]


class GpioUnavailable(Exception):
    """No usable GPIO for this device; the message says why."""


@overload
def open_device(
    kind: Literal["DigitalInputDevice"], *pins: int, pin_factory: Any = ..., **options: Any
) -> DigitalInputDevice: ...
@overload
def open_device(kind: Literal["PWMLED"], *pins: int, pin_factory: Any = ..., **options: Any) -> PWMLED: ...
@overload
def open_device(kind: Literal["RGBLED"], *pins: int, pin_factory: Any = ..., **options: Any) -> RGBLED: ...
def open_device(kind: str, *pins: int, pin_factory: Any = None, **options: Any) -> Any:
    """``gpiozero.<kind>(*pins, **options)`` (e.g. ``"DigitalInputDevice"``, ``"PWMLED"``, ``"RGBLED"``).

    ``pin_factory`` None means gpiozero's default (tests pass a ``MockFactory``).
    """
    try:
        import gpiozero
        from gpiozero.exc import BadPinFactory, GPIOZeroError
    except ImportError as exc:
        raise GpioUnavailable(f"gpiozero cannot be imported: {exc}") from exc
    if pin_factory is not None:
        options["pin_factory"] = pin_factory
    with warnings.catch_warnings(record=True) as caught:  # PinFactoryFallback: kept for the message
        warnings.simplefilter("always")
        try:
            return getattr(gpiozero, kind)(*pins, **options)
        except BadPinFactory as exc:
            raise GpioUnavailable(_no_pin_factory(caught, exc)) from exc
        except (GPIOZeroError, ImportError, OSError, RuntimeError) as exc:
            raise GpioUnavailable(str(exc) or type(exc).__name__) from exc


def _no_pin_factory(caught: list[warnings.WarningMessage], exc: Exception) -> str:
    """Why each of gpiozero's pin factories failed, from its fallback warnings, in one sentence."""
    from gpiozero.exc import PinFactoryFallback

    fallbacks = [w for w in caught if issubclass(w.category, PinFactoryFallback)]
    tried = "; ".join(str(w.message).removeprefix("Falling back from ") for w in fallbacks)
    tried = tried or str(exc).rstrip("!.")
    return (
        f"no working GPIO pin factory: {tried}. On Raspberry Pi OS install python3-lgpio"
        " (PyPI's lgpio for aarch64 is a placeholder) in a venv with system site-packages,"
        " as scripts/setup and scripts/install.sh make"
    )

"""The one gpiozero opener: a device by class name, quietly, or :class:`GpioUnavailable` saying why.

gpiozero is imported only here and only when a device is opened, so a PC without GPIO
(or a broken pin library) cannot break imports; the button and the light then run
without their hardware and say so once.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["GpioUnavailable", "open_device"]


class GpioUnavailable(Exception):
    """No usable GPIO for this device; the message says why."""


def open_device(kind: str, *pins: int, pin_factory: Any = None, **options: Any) -> Any:
    """``gpiozero.<kind>(*pins, **options)`` (e.g. ``"Button"``, ``"PWMLED"``, ``"RGBLED"``).

    ``pin_factory`` None means gpiozero's default (tests pass a ``MockFactory``).
    """
    try:
        import gpiozero
        from gpiozero.exc import GPIOZeroError
    except ImportError as exc:
        raise GpioUnavailable(f"gpiozero cannot be imported: {exc}") from exc
    if pin_factory is not None:
        options["pin_factory"] = pin_factory
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PinFactoryFallback chatter on a PC
            return getattr(gpiozero, kind)(*pins, **options)
    except (GPIOZeroError, ImportError, OSError, RuntimeError) as exc:
        raise GpioUnavailable(str(exc) or type(exc).__name__) from exc

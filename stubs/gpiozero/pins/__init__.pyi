"""gpiozero.pins: only the mock factory's module is used (by the tests)."""

"""The kiosk's GPIO front panel and hardware checks: the button (input), the status light (output)."""

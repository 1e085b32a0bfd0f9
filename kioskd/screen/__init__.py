"""The kiosk's local screen: live captions and touch controls in a page the daemon serves."""

from kioskd.screen.captions import Caption, ScreenModel, word_times
from kioskd.screen.server import ScreenActions, ScreenServer

__all__ = ["Caption", "ScreenActions", "ScreenModel", "ScreenServer", "word_times"]

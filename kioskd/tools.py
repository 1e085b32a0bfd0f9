"""Client tools: what the agent may ask the kiosk to do (``client_tool_call``).

A :class:`ToolRegistry` maps tool names to handlers built from ``[tools]`` in the config.
Handlers are plain functions ``(parameters) -> str``; they raise :class:`ToolError`
for an answer that should carry ``is_error: true``.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable, Mapping
from typing import Any

from kioskd.config import BuiltinTool, Config

__all__ = ["BUILTIN_TOOLS", "ToolError", "ToolRegistry"]

Handler = Callable[[Mapping[str, Any]], str]


class ToolError(Exception):
    """A tool call that failed; its message is sent back with ``is_error: true``."""


def _kiosk_info(config: Config) -> Handler:
    def handler(_: Mapping[str, Any]) -> str:
        return json.dumps({"kiosk_id": config.kiosk.id, "location": config.kiosk.location})

    return handler


def _current_time(_: Config) -> Handler:
    def handler(_: Mapping[str, Any]) -> str:
        return _dt.datetime.now().astimezone().isoformat(timespec="minutes")

    return handler


def _end_conversation(_: Config) -> Handler:
    def handler(_: Mapping[str, Any]) -> str:
        # The session recognises this tool by name and ends the conversation after answering.
        return "ending the conversation"

    return handler


def _fixed_text(text: str) -> Handler:
    def handler(_: Mapping[str, Any]) -> str:
        return text

    return handler


#: built-in tool name → factory taking the config
BUILTIN_TOOLS: dict[BuiltinTool, Callable[[Config], Handler]] = {
    "kiosk_info": _kiosk_info,
    "current_time": _current_time,
    "end_conversation": _end_conversation,
}

END_CONVERSATION = "end_conversation"


class ToolRegistry:
    """The tools this kiosk offers, by name."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = dict(handlers)

    @classmethod
    def from_config(cls, config: Config) -> ToolRegistry:
        handlers: dict[str, Handler] = {name: BUILTIN_TOOLS[name](config) for name in config.tools.builtin}
        for name, text in config.tools.static.items():
            handlers[name] = _fixed_text(text)
        return cls(handlers)

    def __contains__(self, name: str) -> bool:
        return name in self._handlers

    def call(self, name: str, parameters: Mapping[str, Any]) -> tuple[str, bool]:
        """Run tool ``name``; returns ``(result, is_error)`` and never raises."""
        handler = self._handlers.get(name)
        if handler is None:
            known = ", ".join(sorted(self._handlers)) or "none"
            return f"unknown tool {name!r} (this kiosk offers: {known})", True
        try:
            return handler(parameters), False
        except ToolError as exc:
            return str(exc), True
        except Exception as exc:  # a tool's bug must not end the conversation
            return f"tool {name!r} failed: {type(exc).__name__}: {exc}", True

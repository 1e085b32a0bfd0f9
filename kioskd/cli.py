"""``kioskd COMMAND [ARGS]``: one entry point, one module per command.

Each command lives in its own module as ``main(argv) -> int`` and parses its own
arguments; it is imported only when run, so ``kioskd ctl`` starts fast and a
broken optional dependency cannot break the other commands.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["COMMANDS", "main"]

#: name → (module:function, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("kioskd.service.daemon:main", "run the kiosk daemon (what systemd starts)"),
    "demo": ("kioskd.ops.demo:main", "run simulator and daemon on loopback: one whole conversation, no hardware"),
    "check-config": ("kioskd.ops.check_config:main", "validate a config.toml; exit 2 naming each bad key"),
    "ctl": ("kioskd.ops.ctl:main", "talk to a running daemon: start | end | status"),
    "devices": ("kioskd.hardware.checks:devices_main", "list audio input and output devices with their rates"),
    "test-mic": ("kioskd.hardware.checks:test_mic_main", "show a live microphone level meter"),
    "test-speaker": ("kioskd.hardware.checks:test_speaker_main", "play a short tone on the speaker"),
    "test-leds": ("kioskd.hardware.checks:test_leds_main", "step the status light through every pattern"),
    "simulator": ("kioskd.simulator.cli:main", "run the local agent and signing backend simulator"),
    "backend": ("kioskd.backend.server:main", "run the reference signing backend (or: backend hash-token)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: kioskd COMMAND [ARGS]   (kioskd COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the command named by the first argument."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from kioskd import __version__

        print(f"kioskd {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"kioskd: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)

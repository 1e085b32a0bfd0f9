"""``kioskd run``: every part of one kiosk, wired together in one Trio nursery.

:class:`Kiosk` builds the parts from a :class:`~kioskd.config.Config` and runs them;
``main`` adds what a systemd service needs: config errors as exit code 2, READY=1
once the audio devices are open, STATUS= lines, the watchdog, SIGTERM (end the
conversation with close 1000, exit within 2 s) and SIGHUP (reload, keep the old
settings if the new file is bad).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from typing import Any

import trio

from kioskd.ops import systemd
from kioskd.audio.engine import AudioEngine
from kioskd.backend.client import PublicAgentUrl, SignedUrlProvider, UrlSource
from kioskd.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from kioskd.ops.control import ControlServer, ControlSocketInUse, check_socket_free
from kioskd.ops.logs import register_secret, setup_logging
from kioskd.state import Status, StatusBoard
from kioskd.service.supervisor import Supervisor
from kioskd.tools import ToolRegistry

__all__ = ["Kiosk", "main"]

log = logging.getLogger(__name__)

#: SIGTERM: how long a running conversation gets to close cleanly before we just exit.
SHUTDOWN_GRACE = 1.5
#: Sections whose changes need a restart (they hold open devices, sockets or pins).
RESTART_SECTIONS = ("audio", "control", "button", "leds", "trigger", "backend", "network")


def make_url_source(config: Config) -> UrlSource:
    """Signed URLs from the kiosk's backend, or the public agent URL without one."""
    if config.backend is None:
        return PublicAgentUrl(config.agent.server, config.agent.agent_id)
    token = config.kiosk_token()
    register_secret(token)
    return SignedUrlProvider(config.backend, config.network, config.agent.agent_id, token)


class Kiosk:
    """One kiosk: audio, URL source, supervisor, control socket, triggers and light."""

    def __init__(self, config: Config, *, pin_factory: Any = None, audio: AudioEngine | None = None) -> None:
        """``pin_factory`` (gpiozero) and ``audio`` are for tests and benchmarks; the defaults are the real ones."""
        self.config = config
        self.board = StatusBoard()
        self.audio = audio or AudioEngine(config.audio)
        self.urls = make_url_source(config)
        self.supervisor = Supervisor(config, self.audio, self.board, self.urls, ToolRegistry.from_config(config))
        self._pin_factory = pin_factory
        self._last_status_line = ""

    def status(self) -> dict[str, Any]:
        """What ``kioskd ctl status`` prints."""
        out = self.board.status.as_json()
        out.update(self.supervisor.details())
        out["audio"] = self.audio.status()
        return out

    def reload(self, path: str) -> bool:
        """Re-read the config; apply it if valid, else keep the old one. Returns success."""
        try:
            new = load_config(path)
            if new.backend is not None:
                register_secret(new.kiosk_token())
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, keeping the old settings: %s", problem)
            return False
        for section in RESTART_SECTIONS:
            if getattr(new, section) != getattr(self.config, section):
                log.warning("reload: [%s] changed; restart kioskd to apply it", section)
        new = dataclasses.replace(
            new, **{section: getattr(self.config, section) for section in RESTART_SECTIONS}
        )
        self.config = new
        self.supervisor.config = new
        self.supervisor.set_tools(ToolRegistry.from_config(new))
        setup_logging(new.log.level)
        log.info("config reloaded path=%s", path)
        return True

    def _announce(self, status: Status) -> None:
        line = f"{status.state}: {status.reason}" if status.reason else str(status.state)
        if line != self._last_status_line:
            self._last_status_line = line
            systemd.status(line)
            log.info("state changed state=%s reason=%r", status.state, status.reason)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every part until cancelled; ``started()`` once the audio devices are open."""
        from kioskd.hardware.leds import LedDriver
        from kioskd.hardware.button import ButtonTrigger, FeedbackButtons
        from kioskd.audio.vad_wake import VadWakeTrigger

        config = self.config
        self.board.listen(self._announce)
        self._announce(self.board.status)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.audio.run)
            await nursery.start(self.urls.run)
            # the light first: it must be driven before anything can send microphone audio
            self.leds = LedDriver(config.leds, self.board, pin_factory=self._pin_factory)
            await nursery.start(self.leds.run)
            await nursery.start(self.supervisor.run)
            control = ControlServer(
                config.control.socket, self.supervisor.command, self.status, deliver=self.supervisor.visitor_message
            )
            await nursery.start(control.run)
            if config.trigger.mode in ("button", "both"):
                self.button = ButtonTrigger(config.button, self.supervisor.command, pin_factory=self._pin_factory)
                await nursery.start(self.button.run)
            feedback = FeedbackButtons(config.button, self.supervisor.visitor_message, pin_factory=self._pin_factory)
            if feedback.pins:
                self.feedback_buttons = feedback
                await nursery.start(feedback.run)
            if config.trigger.mode in ("vad", "both"):
                wake = VadWakeTrigger(
                    config.vad, self.supervisor.command, self.board, speaking=lambda: self.audio.speaking
                )
                self.audio.add_frame_listener(wake.on_frame)
                self.wake = wake
            await nursery.start(systemd.watchdog_task, self.supervisor.healthy)
            task_status.started()

    async def aclose(self) -> None:
        """Release what outlives the tasks (the backend client's connections)."""
        with trio.CancelScope(shield=True):
            await self.urls.aclose()

    async def shutdown(self) -> None:
        """End a running conversation cleanly (close 1000), waiting at most SHUTDOWN_GRACE."""
        with trio.move_on_after(SHUTDOWN_GRACE):
            await self.supervisor.end_and_wait()


#: Exit status when another kioskd answers on the control socket.
EXIT_IN_USE = 1


async def _serve(config: Config, config_path: str) -> int:
    try:
        check_socket_free(config.control.socket)  # before opening any device: a second copy stops here
        kiosk = Kiosk(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"kioskd: {problem}", file=sys.stderr)
        return 2
    except ControlSocketInUse as exc:
        print(f"kioskd: {exc}", file=sys.stderr)
        return EXIT_IN_USE
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            await nursery.start(kiosk.run)
            systemd.ready()
            log.info("kioskd ready kiosk=%s trigger=%s", kiosk.config.kiosk.id, kiosk.config.trigger.mode)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    systemd.reloading()
                    kiosk.reload(config_path)
                    systemd.ready()
                    continue
                log.info("stopping signal=%s", signal.Signals(signum).name)
                systemd.stopping()
                await kiosk.shutdown()
                nursery.cancel_scope.cancel()
                break
    await kiosk.aclose()
    return 0


def main(argv: list[str]) -> int:
    """``kioskd run --config PATH``."""
    parser = argparse.ArgumentParser(prog="kioskd run", description="Run the kiosk daemon.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    args = parser.parse_args(argv)
    setup_logging("info")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"kioskd: {problem}", file=sys.stderr)
        return 2
    setup_logging(config.log.level)
    return trio.run(_serve, config, args.config)


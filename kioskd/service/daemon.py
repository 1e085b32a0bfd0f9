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

from kioskd.audio.cues import load_cues, read_sound
from kioskd.audio.engine import AudioEngine
from kioskd.backend.client import PublicAgentUrl, SignedUrlProvider, UrlSource
from kioskd.backend.heartbeat import HeartbeatSender
from kioskd.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from kioskd.events import EventBus
from kioskd.ops import systemd
from kioskd.ops.control import (
    START_TIMEOUT,
    ControlServer,
    ControlSocketInUse,
    Handler,
    Reply,
    Request,
    check_socket_free,
)
from kioskd.ops.controls import LiveControls, Settings
from kioskd.ops.hooks import HookRunner
from kioskd.ops.logs import register_secret, setup_logging
from kioskd.ops.problems import ProblemWatch, live_problems, readiness_problems
from kioskd.service.supervisor import VISITOR_MESSAGES, Supervisor
from kioskd.state import Command, KioskState, Status, StatusBoard
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
    token = config.backend.kiosk_token()
    register_secret(token)
    return SignedUrlProvider(config.backend, config.network, config.agent.agent_id, token)


class Kiosk:
    """One kiosk: audio, URL source, supervisor, control socket, triggers and light."""

    def __init__(self, config: Config, *, pin_factory: Any = None, audio: AudioEngine | None = None) -> None:
        """``pin_factory`` (gpiozero) and ``audio`` are for tests and benchmarks; the defaults are the real ones."""
        self.config = config
        self.board = StatusBoard()
        self.events = EventBus()
        self.audio = audio or AudioEngine(config.audio)
        self.urls = make_url_source(config)
        self.supervisor = Supervisor(
            config, self.audio, self.board, self.urls, ToolRegistry.from_config(config), events=self.events
        )
        self.heartbeat: HeartbeatSender | None = None
        if config.backend is not None and isinstance(self.urls, SignedUrlProvider):
            self.heartbeat = HeartbeatSender(config.backend, config.backend.kiosk_token(), self.status, self.urls)
        self.controls = LiveControls(
            config.state.file, config.audio.volume, config.hours, self.events, self._apply_controls
        )
        self.hooks = HookRunner(config.hooks, self.events)
        self._fixed_problems = readiness_problems(config, devices=False)
        self._load_sounds()
        self.problems = ProblemWatch(self.board, self.events, self._live_problems, self._fixed_problems)
        self._pin_factory = pin_factory
        self._last_state: KioskState | None = None
        self._last_status_line = ""
        self.button: Any = None
        self.leds: Any = None
        self.screen: Any = None  # ScreenServer, when [screen] listen is set

    def status(self) -> dict[str, Any]:
        """What ``kioskd ctl status`` prints (problems looked at now, not up to a second ago)."""
        self.problems.check()
        out = self.board.status.as_json()
        out.update(self.supervisor.details())
        out["controls"] = self.controls.snapshot()
        out["audio"] = self.audio.status()
        return out

    # ------------------------------------------------------------------ operator (issue 15)

    def _load_sounds(self) -> None:
        """Cues and the privacy notice into memory; a bad file becomes a problem, not a crash."""
        import wave

        try:
            self.audio.cues = load_cues(self.config.cues)
        except (OSError, wave.Error) as exc:
            self._fixed_problems.append(f"cues: cannot load a sound ({exc}); the kiosk plays none")
        privacy = self.config.privacy
        self._notice_sound = None
        if privacy.notice:
            try:
                self._notice_sound = read_sound(privacy.notice.removeprefix("wav:"))
            except (OSError, wave.Error) as exc:
                self._fixed_problems.append(f"privacy.notice: cannot load {privacy.notice} ({exc})")
        if privacy.notice or privacy.notice_text:
            self.supervisor.notice = self._play_notice

    async def _play_notice(self) -> None:
        """Before the first turn: say why the microphone listens (sound and/or text for a screen)."""
        if self.config.privacy.notice_text:
            self.events.publish("notice", text=self.config.privacy.notice_text)
        if self._notice_sound is not None:
            await trio.sleep(self.audio.play_sound(self._notice_sound))

    def _live_problems(self) -> list[str]:
        return live_problems(self.config, self.audio.status(), button=self.button, leds=self.leds, urls=self.urls)

    def _apply_controls(self, settings: Settings, closed: str | None) -> None:
        self.audio.volume = settings.volume
        self.audio.muted = settings.muted
        self.supervisor.closed = closed

    def control_handlers(self) -> dict[str, Handler]:
        """The control socket's daemon commands: start (waits), watch (streams), live controls."""

        def change(**values: Any) -> Handler:
            async def handler(req: Request, reply: Reply) -> None:
                await reply({"ok": True, **self.controls.change(**values)})
            return handler

        async def volume(req: Request, reply: Reply) -> None:
            if req.value is None or not 0.0 <= req.value <= 1.0:
                await reply({"ok": False, "error": "volume needs \"value\": a number from 0.0 to 1.0"})
                return
            await reply({"ok": True, **self.controls.change(volume=float(req.value))})

        async def start(req: Request, reply: Reply) -> None:
            await reply(await self.start_and_wait())

        async def watch(req: Request, reply: Reply) -> None:
            with self.events.subscribe() as events:
                await reply({"ok": True, "watching": True, "status": self.board.status.as_json()})
                async for event in events:
                    await reply(event)

        async def visitor(req: Request, reply: Reply) -> None:  # feedback, say, context, activity
            problem = self.supervisor.visitor_message(req.cmd, req.text)
            await reply({"ok": True, "cmd": req.cmd} if problem is None else {"ok": False, "error": problem})

        return {
            **dict.fromkeys(VISITOR_MESSAGES, visitor),
            "start": start, "watch": watch, "volume": volume,
            "mute": change(muted=True), "unmute": change(muted=False),
            "close": change(closed=True), "open": change(closed=False),
        }

    async def start_and_wait(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """Start a conversation; answer once it is open, or the start failed, or after ``timeout``."""
        if self.supervisor.closed is not None:
            return {"ok": False, "error": f"the kiosk is closed: {self.supervisor.closed}"}
        status = self.board.status
        if status.state is KioskState.CONVERSATION and status.conversation_id:
            return {"ok": True, "cmd": "start", "conversation_id": status.conversation_id, "already": True}
        with self.events.subscribe() as events:
            self.supervisor.command(Command.START)
            with trio.move_on_after(timeout):
                async for event in events:
                    if event["type"] == "conversation_started":
                        return {"ok": True, "cmd": "start", "conversation_id": event["id"]}
                    if event["type"] == "start_failed":
                        return {"ok": False, "error": f"start failed: {event['reason']}"}
        now = self.board.status
        return {"ok": False, "error": f"no conversation after {timeout:g} s ({now.state}: {now.reason or 'no reason'})"}

    def reload(self, path: str) -> bool:
        """Re-read the config; apply it if valid, else keep the old one. Returns success.

        Sections in RESTART_SECTIONS keep their old values (each change is logged as needing
        a restart); the kiosk token is re-read from the file in use and applied at once.
        """
        try:
            new = load_config(path)
            restart = [s for s in RESTART_SECTIONS if getattr(new, s) != getattr(self.config, s)]
            new = dataclasses.replace(new, **{s: getattr(self.config, s) for s in RESTART_SECTIONS})
            token = new.backend.kiosk_token() if new.backend is not None else None
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, keeping the old settings: %s", problem)
            return False
        for section in restart:
            log.warning("reload: [%s] changed; restart kioskd to apply it", section)
        if token is not None and isinstance(self.urls, SignedUrlProvider) and token != self.urls.token:
            register_secret(token)
            self.urls.set_token(token)
            log.info("reload: kiosk token changed; using the new one from now on")
        self.config = new
        self.supervisor.reload(new, ToolRegistry.from_config(new))
        setup_logging(new.log.level)
        log.info("config reloaded path=%s restart_needed=%s", path, ",".join(restart) or "no")
        return True

    def _announce(self, status: Status) -> None:
        """systemd STATUS= on every change of state or reason; one log line and one event per state change."""
        line = f"{status.state}: {status.reason}" if status.reason else str(status.state)
        if line != self._last_status_line:
            self._last_status_line = line
            systemd.status(line)
        if status.state is not self._last_state:
            self._last_state = status.state
            if status.reason:
                log.info("state changed state=%s reason=%r", status.state, status.reason)
            else:
                log.info("state changed state=%s", status.state)
            self.events.publish("state", state=str(status.state), reason=status.reason)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every part until cancelled; ``started()`` once the audio devices are open."""
        from kioskd.audio.vad_wake import VadWakeTrigger
        from kioskd.hardware.button import ButtonTrigger, FeedbackButtons
        from kioskd.hardware.leds import LedDriver

        config = self.config
        self.board.listen(self._announce)
        self._announce(self.board.status)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.controls.run)  # volume, mute, closed: before any sound or start
            await nursery.start(self.hooks.run)
            await nursery.start(self.audio.run)
            await nursery.start(self.urls.run)
            if self.heartbeat is not None:
                await nursery.start(self.heartbeat.run)
            # the light first: it must be driven before anything can send microphone audio
            self.leds = LedDriver(config.leds, self.board, pin_factory=self._pin_factory)
            await nursery.start(self.leds.run)
            await nursery.start(self.supervisor.run)
            control = ControlServer(
                config.control.socket, self.supervisor.command, self.status, self.control_handlers()
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
                # frames under the energy floor never count as speech: a quiet room hands nothing over
                self.audio.add_frame_listener(wake.on_frame, min_dbfs=config.vad.energy_floor_dbfs)
                self.wake = wake
            await nursery.start(self.problems.run)
            if config.screen.listen:
                await self._start_screen(nursery)
            await nursery.start(systemd.watchdog_task, self.supervisor.healthy)
            task_status.started()

    async def _start_screen(self, nursery: trio.Nursery) -> None:
        """The local captions page (``[screen] listen``), fed by the board and the agent's events."""
        from kioskd.backend.server_config import parse_listen
        from kioskd.screen import ScreenModel, ScreenServer
        from kioskd.screen.feed import ScreenFeed, kiosk_actions

        config = self.config
        model = ScreenModel(
            language=config.screen.language or config.agent.language or "en",
            kiosk_name=config.kiosk.location or config.kiosk.id,
            notice=config.privacy.notice_text,
        )
        self.screen = ScreenServer(parse_listen(config.screen.listen), model, kiosk_actions(self))
        feed = ScreenFeed(model, self.screen)
        self.board.listen(feed.on_status)
        feed.on_status(self.board.status)
        self.supervisor.observers.append(feed.on_event)
        await nursery.start(self.screen.run)

    async def aclose(self) -> None:
        """Release what outlives the tasks (the backend client's connections)."""
        with trio.CancelScope(shield=True):
            await self.urls.aclose()
            if self.heartbeat is not None:
                await self.heartbeat.aclose()

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
            problems = kiosk.board.status.problems
            if problems:
                log.warning(
                    "kioskd running with problems kiosk=%s trigger=%s problems=%d (kioskd ctl status lists them)",
                    kiosk.config.kiosk.id, kiosk.config.trigger.mode, len(problems),
                )
            else:
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


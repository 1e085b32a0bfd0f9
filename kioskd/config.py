"""``config.toml`` → typed, validated settings.

Every section is a frozen dataclass; :func:`load_config` converts the TOML tree
into them with :mod:`kioskd.schema`, which collects *every* problem at once, each
naming its dotted key (``audio.input: expected a string``). ``config.toml`` at the
repository root documents every key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from kioskd.backend.client_config import BackendConfig
from kioskd.hardware.config import ButtonConfig, LedConfig
from kioskd.ops.config import CuesConfig, HooksConfig, HoursConfig, PrivacyConfig, StateConfig
from kioskd.schema import ConfigError, load_as, parse_as

__all__ = [
    "DEFAULT_CONFIG",
    "AgentConfig",
    "AudioConfig",
    "ButtonConfig",
    "Config",
    "ConfigError",
    "ControlConfig",
    "ConversationConfig",
    "CuesConfig",
    "HooksConfig",
    "HoursConfig",
    "KioskConfig",
    "LedConfig",
    "LogConfig",
    "NetworkConfig",
    "PrivacyConfig",
    "ScreenConfig",
    "StateConfig",
    "ToolsConfig",
    "TriggerConfig",
    "VadWakeConfig",
    "load_config",
    "parse_config",
]

#: Where ``kioskd run`` and the other commands look for the config file by default.
DEFAULT_CONFIG = "/etc/kioskd/config.toml"

SCALAR = str | int | float | bool


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class KioskConfig:
    """Who this kiosk is; both are sent to the agent as dynamic variables."""

    id: str = "kiosk"
    location: str = ""

    def problems(self) -> list[tuple[str, str]]:
        return [] if self.id.strip() else [("id", "must not be empty")]


@dataclass(frozen=True)
class AgentConfig:
    """The ElevenLabs agent and the per-kiosk conversation overrides."""

    agent_id: str = ""
    server: str = "wss://api.elevenlabs.io"
    first_message: str = ""
    language: str = ""
    prompt: str = ""
    voice_id: str = ""
    dynamic_variables: dict[str, SCALAR] = field(default_factory=dict)
    #: Server events to ask for (the ``conversation.client_events`` override); empty: the
    #: agent's own. The agent's security settings must allow the override.
    client_events: list[str] = field(default_factory=list)

    def problems(self) -> list[tuple[str, str]]:
        from kioskd.protocol.server_events import SCHEMA_EVENT_TYPES  # late: keep config importable on its own

        out = []
        if not self.agent_id.strip():
            out.append(("agent_id", "must be set to your agent's id"))
        unknown = [name for name in self.client_events if name not in SCHEMA_EVENT_TYPES - {"error"}]
        if unknown:
            out.append(("client_events", f"unknown event types {', '.join(map(repr, unknown))} (see the AsyncAPI's "
                                         "ClientEvent list, e.g. audio, interruption, vad_score, agent_tool_response)"))
        elif self.client_events and "audio" not in self.client_events:
            out.append(("client_events", "must include 'audio' (without it the kiosk hears nothing)"))
        if not self.server.startswith(("ws://", "wss://")):
            out.append(("server", f"must start with wss:// (or ws:// for a local simulator), got {self.server!r}"))
        return out


EchoMode = Literal["aec", "half_duplex", "off"]
"""``aec``: echo cancellation, full duplex (the visitor is heard while the agent talks and can
interrupt it); ``half_duplex``: the microphone is muted while the agent speaks (the visitor
cannot interrupt); ``off``: nothing (a headset, or a speakerphone with its own canceller)."""

Pacing = Literal["auto", "clock", "device"]
"""How a device loop keeps real time: ``device``: the device blocks (real sound cards);
``clock``: on the monotonic clock (devices with no clock of their own: ALSA ``type file``
PCMs, some virtual sinks); ``auto``: measured over the first 0.3 s of audio (a guess on a
machine too slow or too loaded to move audio much faster than real time)."""


@dataclass(frozen=True)
class AudioConfig:
    """Microphone, speaker, uplink buffering, jitter buffer and echo handling."""

    input: str = "default"
    output: str = "default"
    input_rate: int = 0
    output_rate: int = 0
    chunk_ms: int = 20
    max_message_ms: int = 250
    max_backlog_ms: int = 2000
    preroll_ms: int = 500
    jitter_min_ms: int = 20
    jitter_max_ms: int = 400
    jitter_start_ms: int = 60
    device_period_ms: int = 10
    fade_ms: int = 5
    echo: EchoMode = "aec"
    volume: float = 1.0
    pacing: Pacing = "auto"

    def problems(self) -> list[tuple[str, str]]:
        out = []
        for key in ("input", "output"):
            value = getattr(self, key)
            if not value.strip() or value == "wav:":
                out.append((key, "must be a device name, 'default' or 'wav:PATH'"))
        for key in ("input_rate", "output_rate"):
            if getattr(self, key) not in (0, 8000, 16000, 22050, 24000, 32000, 44100, 48000):
                out.append((key, "must be 0 (device default) or a standard rate such as 16000 or 48000"))
        if self.chunk_ms not in (10, 20, 30, 40, 50):
            out.append(("chunk_ms", "must be 10, 20, 30, 40 or 50"))
        if not self.chunk_ms <= self.max_message_ms <= 1000:
            out.append(("max_message_ms", "must be between chunk_ms and 1000"))
        if not 100 <= self.max_backlog_ms <= 60000:
            out.append(("max_backlog_ms", "must be between 100 and 60000"))
        if not 0 <= self.preroll_ms <= 5000:
            out.append(("preroll_ms", "must be between 0 and 5000"))
        if not 0 < self.jitter_min_ms <= self.jitter_start_ms <= self.jitter_max_ms <= 5000:
            out.append(("jitter_start_ms", "needs 0 < jitter_min_ms <= jitter_start_ms <= jitter_max_ms <= 5000"))
        if not 2 <= self.device_period_ms <= 100:
            out.append(("device_period_ms", "must be between 2 and 100"))
        if not 0 <= self.fade_ms <= 50:
            out.append(("fade_ms", "must be between 0 and 50"))
        if not 0.0 <= self.volume <= 1.0:
            out.append(("volume", "must be between 0.0 and 1.0"))
        return out


@dataclass(frozen=True)
class ConversationConfig:
    """When a conversation ends by itself, and how a broken one is resumed."""

    idle_timeout: float = 20.0
    max_duration: float = 600.0
    reconnect_grace: float = 30.0
    context_lines: int = 8

    def problems(self) -> list[tuple[str, str]]:
        out = []
        for key in ("idle_timeout", "max_duration"):
            if getattr(self, key) <= 0:
                out.append((key, "must be positive"))
        if self.reconnect_grace < 0:
            out.append(("reconnect_grace", "must be zero (never resume) or positive"))
        if self.context_lines < 0:
            out.append(("context_lines", "must not be negative"))
        return out


@dataclass(frozen=True)
class NetworkConfig:
    """Backoff and dead-link detection for the backend and the agent's WebSocket."""

    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    stall_timeout: float = 8.0
    ws_ping_interval: float = 2.0
    connect_timeout: float = 10.0
    max_message_bytes: int = 16 * 1024 * 1024

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not 0 < self.backoff_base <= self.backoff_cap:
            out.append(("backoff_base", "needs 0 < backoff_base <= backoff_cap"))
        if not 0 < self.ws_ping_interval < self.stall_timeout:
            out.append(("ws_ping_interval", "needs 0 < ws_ping_interval < stall_timeout"))
        if self.connect_timeout <= 0:
            out.append(("connect_timeout", "must be positive"))
        if self.max_message_bytes < 65536:
            out.append(("max_message_bytes", "must be at least 65536"))
        return out


TriggerMode = Literal["button", "vad", "both", "manual"]


@dataclass(frozen=True)
class TriggerConfig:
    """What starts a conversation (the control socket always can)."""

    mode: TriggerMode = "button"

    def problems(self) -> list[tuple[str, str]]:
        return []


@dataclass(frozen=True)
class VadWakeConfig:
    """Voice-activity wake: how much speech, how loud, starts a conversation."""

    aggressiveness: int = 2
    min_speech_ms: int = 300
    window_ms: int = 500
    energy_floor_dbfs: float = -45.0
    playback_tail_ms: int = 500

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.aggressiveness not in (0, 1, 2, 3):
            out.append(("aggressiveness", "must be 0, 1, 2 or 3"))
        if not 0 < self.min_speech_ms <= self.window_ms <= 5000:
            out.append(("min_speech_ms", "needs 0 < min_speech_ms <= window_ms <= 5000"))
        if not -90.0 <= self.energy_floor_dbfs <= 0.0:
            out.append(("energy_floor_dbfs", "must be between -90 and 0"))
        if not 0 <= self.playback_tail_ms <= 5000:
            out.append(("playback_tail_ms", "must be between 0 and 5000"))
        return out


@dataclass(frozen=True)
class ControlConfig:
    """The local control socket (``kioskd ctl``)."""

    socket: str = "/run/kioskd/control.sock"

    def problems(self) -> list[tuple[str, str]]:
        return [] if self.socket.strip() else [("socket", "must be a path")]


#: The client tools built into kioskd (handlers in :mod:`kioskd.tools`).
BuiltinTool = Literal["kiosk_info", "current_time", "end_conversation"]


@dataclass(frozen=True)
class ToolsConfig:
    """Client tools the agent may call: built-ins by name, plus fixed-text answers."""

    builtin: list[BuiltinTool] = field(default_factory=lambda: list(get_args(BuiltinTool)))
    static: dict[str, str] = field(default_factory=dict)

    def problems(self) -> list[tuple[str, str]]:
        return []


#: The listen address the screen unit (systemd/kioskd-screen.service) opens in Chromium.
DEFAULT_SCREEN_LISTEN = "127.0.0.1:8088"


@dataclass(frozen=True)
class ScreenConfig:
    """The kiosk's local screen page: captions and touch controls (off unless ``listen`` is set)."""

    listen: str = ""  # e.g. DEFAULT_SCREEN_LISTEN; loopback only (the page has no login)
    language: str = ""  # the page's language; "" = [agent] language, else English

    def problems(self) -> list[tuple[str, str]]:
        if not self.listen:
            return []
        from kioskd.backend.server_config import parse_listen  # late: it imports trio (resp.py); config stays pure

        try:
            host, _ = parse_listen(self.listen)
        except ValueError as exc:
            return [("listen", str(exc))]
        if host not in ("127.0.0.1", "::1", "localhost"):
            return [("listen", f"must be a loopback address such as {DEFAULT_SCREEN_LISTEN!r}: "
                               "the page's controls have no login, so only the kiosk's own browser may reach it")]
        return []


LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True)
class LogConfig:
    """Log level for the structured lines on stdout; whether visitors' and the agent's words are logged."""

    level: LogLevel = "info"
    transcripts: bool = False

    def problems(self) -> list[tuple[str, str]]:
        return []


def pin_problems(config: Config) -> list[tuple[str, str]]:
    """GPIO pins used twice, as ``(key, message naming the other key)``; only pins really in use count."""
    pins: list[tuple[str, int]] = []
    if config.trigger.mode in ("button", "both"):
        pins.append(("button.pin", config.button.pin))
    for key in ("like_pin", "dislike_pin"):
        if (pin := getattr(config.button, key)) != -1:
            pins.append((f"button.{key}", pin))
    if config.leds.kind == "pwm":
        pins.append(("leds.pin", config.leds.pin))
    elif config.leds.kind == "rgb":  # three different pins: LedConfig checks that
        pins += [(f"leds.{colour}", getattr(config.leds, colour)) for colour in ("red", "green", "blue")]
    used: dict[int, str] = {}
    out = []
    for key, pin in pins:
        if pin in used and not (key.startswith("leds.") and used[pin].startswith("leds.")):
            out.append((key, f"GPIO {pin} is already used by {used[pin]}"))
        used.setdefault(pin, key)
    return out


@dataclass(frozen=True)
class Config:
    """All of one kiosk's settings. ``backend`` is None for a public agent."""

    kiosk: KioskConfig = field(default_factory=KioskConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    backend: BackendConfig | None = None
    audio: AudioConfig = field(default_factory=AudioConfig)
    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    trigger: TriggerConfig = field(default_factory=TriggerConfig)
    button: ButtonConfig = field(default_factory=ButtonConfig)
    vad: VadWakeConfig = field(default_factory=VadWakeConfig)
    leds: LedConfig = field(default_factory=LedConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    cues: CuesConfig = field(default_factory=CuesConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    hours: HoursConfig = field(default_factory=HoursConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    state: StateConfig = field(default_factory=StateConfig)
    screen: ScreenConfig = field(default_factory=ScreenConfig)

    def problems(self) -> list[tuple[str, str]]:
        return pin_problems(self)


def parse_config(data: dict[str, Any]) -> Config:
    """Validate a parsed kiosk config. Raises :class:`ConfigError` listing every problem."""
    return parse_as(Config, data)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a kiosk's ``config.toml``. Raises :class:`ConfigError` naming every bad key."""
    return load_as(Config, path)

"""``config.toml`` → typed, validated settings.

Every section is a frozen dataclass; :func:`load_config` converts the TOML tree
into them and collects *every* problem at once, each naming its dotted key
(``audio.input: expected a string``). Unknown keys are errors: a typo must not
pass silently. ``config.toml`` at the repository root documents every key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

__all__ = [
    "https_or_loopback",
    "is_loopback",
    "DEFAULT_CONFIG",
    "AgentConfig",
    "AudioConfig",
    "BackendConfig",
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
    "StateConfig",
    "ToolsConfig",
    "TriggerConfig",
    "VadWakeConfig",
    "convert",
    "load_as",
    "load_config",
    "parse_as",
    "parse_config",
]

#: Where ``kioskd run`` and the other commands look for the config file by default.
DEFAULT_CONFIG = "/etc/kioskd/config.toml"

SCALAR = Union[str, int, float, bool]
T = TypeVar("T")
#: The header's GPIO pins in BCM numbering (the 40-pin header of every Raspberry Pi since the B+).
BCM_PINS = range(0, 28)


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds one ``"key: message"`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --------------------------------------------------------------------------- URLs


def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def https_or_loopback(url: str) -> bool:
    """True for an ``https://`` URL with a host, or ``http://`` to a loopback host (a local test double).

    Tokens and keys travel in these requests: never in clear text over a network.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return bool(host) and (parts.scheme == "https" or (parts.scheme == "http" and is_loopback(host)))


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
        from kioskd.protocol import SCHEMA_EVENT_TYPES  # late: keep config importable on its own

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


@dataclass(frozen=True)
class BackendConfig:
    """This kiosk's signing backend (which holds the ElevenLabs API key, not the kiosk)."""

    url: str = ""
    token_file: str = "/etc/kioskd/token"
    timeout: float = 5.0
    prefetch: bool = True
    url_max_age: float = 600.0
    health_interval: float = 60.0
    #: Where the kiosk POSTs its status; empty = ``url`` with its last path segment replaced by ``heartbeat``.
    heartbeat_url: str = ""
    #: Seconds between heartbeats; 0 = off (then health checks fetch signed URLs).
    heartbeat_interval: float = 60.0

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not https_or_loopback(self.url):
            out.append(("url", f"must be an https:// URL (http:// only on loopback), got {self.url!r}"))
        if self.heartbeat_url and not https_or_loopback(self.heartbeat_url):
            out.append(("heartbeat_url", f"must be an https:// URL (http:// only on loopback) or empty, got {self.heartbeat_url!r}"))
        if self.heartbeat_interval < 0:
            out.append(("heartbeat_interval", "must be 0 (off) or positive"))
        if self.timeout <= 0:
            out.append(("timeout", "must be positive"))
        if not 0 < self.url_max_age <= 840:
            out.append(("url_max_age", "must be in (0, 840] seconds: a signed URL is valid 15 minutes"))
        if self.health_interval <= 0:
            out.append(("health_interval", "must be positive"))
        return out


EchoMode = Literal["aec", "half_duplex", "off"]
"""``aec``: echo cancellation, full duplex (the visitor is heard while the agent talks and can
interrupt it); ``half_duplex``: the microphone is muted while the agent speaks (the visitor
cannot interrupt); ``off``: nothing (a headset, or a speakerphone with its own canceller)."""


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


ButtonMode = Literal["toggle", "hold"]


@dataclass(frozen=True)
class ButtonConfig:
    """The GPIO button (BCM pin numbering)."""

    pin: int = 17
    pull_up: bool = True
    mode: ButtonMode = "toggle"
    long_press: float = 3.0
    bounce_ms: int = 50
    #: Optional feedback buttons (BCM pins; -1 = none): a press rates the agent's latest answer.
    like_pin: int = -1
    dislike_pin: int = -1

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.pin not in BCM_PINS:
            out.append(("pin", f"must be a GPIO of the header, BCM {BCM_PINS[0]}–{BCM_PINS[-1]}"))
        for key in ("like_pin", "dislike_pin"):
            if getattr(self, key) != -1 and getattr(self, key) not in BCM_PINS:
                out.append((key, f"must be a GPIO of the header, BCM {BCM_PINS[0]}–{BCM_PINS[-1]}, or -1 for none"))
        if self.long_press <= 0:
            out.append(("long_press", "must be positive"))
        if not 0 <= self.bounce_ms <= 1000:
            out.append(("bounce_ms", "must be between 0 and 1000"))
        return out


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


LedKind = Literal["none", "pwm", "rgb"]


@dataclass(frozen=True)
class LedConfig:
    """Status light: one PWM LED (``pin``) or an RGB LED (``red``/``green``/``blue``)."""

    kind: LedKind = "none"
    pin: int = 18
    red: int = 5
    green: int = 6
    blue: int = 13
    active_high: bool = True
    brightness: float = 1.0

    def problems(self) -> list[tuple[str, str]]:
        out = []
        pins = {"pwm": ("pin",), "rgb": ("red", "green", "blue")}.get(self.kind, ())
        for key in pins:
            if getattr(self, key) not in BCM_PINS:
                out.append((key, f"must be a GPIO of the header, BCM {BCM_PINS[0]}–{BCM_PINS[-1]}"))
        if self.kind == "rgb" and len({self.red, self.green, self.blue}) != 3:
            out.append(("red", "red, green and blue must be three different pins"))
        if not 0.0 < self.brightness <= 1.0:
            out.append(("brightness", "must be in (0, 1]"))
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


LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True)
class LogConfig:
    """Log level for the structured lines on stdout; whether visitors' and the agent's words are logged."""

    level: LogLevel = "info"
    transcripts: bool = False

    def problems(self) -> list[tuple[str, str]]:
        return []


# --------------------------------------------------------------------------- operator sections (issue 15)

#: Cue names (see kioskd.audio.cues) and what ``[cues]`` values mean.
CUE_NAMES = ("listening", "end", "error", "reconnecting")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _sound_problem(value: str) -> str | None:
    """``"default"``, ``""`` (off) or ``"wav:PATH"``/a path: a message when the value cannot be one."""
    if value in ("", "default") or value.removeprefix("wav:").strip():
        return None
    return "must be 'default', '' (off) or the path of a WAV file"


@dataclass(frozen=True)
class CuesConfig:
    """Short sounds the kiosk plays by itself: ``"default"`` (shipped), ``""`` (off) or a WAV file's path."""

    listening: str = "default"
    end: str = "default"
    error: str = "default"
    reconnecting: str = "default"
    volume: float = 0.5

    def problems(self) -> list[tuple[str, str]]:
        out = [(name, msg) for name in CUE_NAMES if (msg := _sound_problem(getattr(self, name)))]
        if not 0.0 <= self.volume <= 1.0:
            out.append(("volume", "must be between 0.0 and 1.0"))
        return out


@dataclass(frozen=True)
class PrivacyConfig:
    """What the kiosk tells a visitor before the first turn (why the microphone listens)."""

    notice: str = ""
    notice_text: str = ""

    def problems(self) -> list[tuple[str, str]]:
        msg = _sound_problem(self.notice) if self.notice != "default" else "has no shipped default; give a WAV file"
        return [("notice", msg)] if msg else []


def parse_hours(spec: str) -> list[tuple[int, int]]:
    """``"09:00-12:30, 13:30-17:00"`` → minute ranges ``[(540, 750), (810, 1020)]``; ValueError naming the part."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            start, end = (_minutes(t) for t in part.split("-"))
        except ValueError:
            raise ValueError(f"{part!r} is not HH:MM-HH:MM") from None
        if start == end:
            raise ValueError(f"{part!r} is empty")
        out.append((start, end))
    return out


def _minutes(text: str) -> int:
    hours, minutes = text.strip().split(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= m < 60 and h * 60 + m <= 1440):
        raise ValueError(text)
    return h * 60 + m


@dataclass(frozen=True)
class HoursConfig:
    """Opening hours: outside them the kiosk is closed (triggers ignored, the light says closed).

    ``daily`` applies to every day without its own key; ``""`` means always open. A range
    may pass midnight (``"22:00-02:00"``). Times are the kiosk's local time.
    """

    daily: str = ""
    mon: str | None = None
    tue: str | None = None
    wed: str | None = None
    thu: str | None = None
    fri: str | None = None
    sat: str | None = None
    sun: str | None = None

    def problems(self) -> list[tuple[str, str]]:
        out = []
        for key in ("daily", *WEEKDAYS):
            value = getattr(self, key)
            if value is None:
                continue
            try:
                parse_hours(value)
            except ValueError as exc:
                out.append((key, f"{exc}; expected e.g. \"09:00-17:00\" or \"09:00-12:00, 13:00-17:00\""))
        return out


@dataclass(frozen=True)
class HooksConfig:
    """Commands run on events (the event as one JSON line on stdin), each killed after ``timeout`` s."""

    timeout: float = 10.0
    on: dict[str, list[str]] = field(default_factory=dict)

    def problems(self) -> list[tuple[str, str]]:
        from kioskd.events import EVENT_TYPES  # late import: events imports nothing from here

        out = []
        if not 0 < self.timeout <= 300:
            out.append(("timeout", "must be in (0, 300] seconds"))
        for name, argv in self.on.items():
            if name != "any" and name not in EVENT_TYPES:
                out.append((f"on.{name}", f"unknown event; known: any, {', '.join(EVENT_TYPES)}"))
            elif not argv or not argv[0].startswith("/"):
                out.append((f"on.{name}", "must be a command as a list, starting with an absolute path"))
        return out


@dataclass(frozen=True)
class StateConfig:
    """Where live settings (volume, mute, closed) are kept across restarts."""

    file: str = "/var/lib/kioskd/state.json"

    def problems(self) -> list[tuple[str, str]]:
        return [] if self.file.strip() else [("file", "must be a path")]


def pin_problems(config: Config) -> list[tuple[str, str]]:
    """GPIO pins used twice, as ``(key, message naming the other key)``; only pins really in use count."""
    pins: list[tuple[str, int]] = []
    if config.trigger.mode in ("button", "both"):
        pins.append(("button.pin", config.button.pin))
    pins += [(f"button.{key}", pin) for key in ("like_pin", "dislike_pin") if (pin := getattr(config.button, key)) != -1]
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

    def problems(self) -> list[tuple[str, str]]:
        return pin_problems(self)

    def kiosk_token(self) -> str:
        """This kiosk's backend token: ``$KIOSKD_TOKEN``, else the first line of ``token_file``.

        A byte-order mark and surrounding whitespace are dropped; what is left must be
        printable ASCII without spaces (it becomes an HTTP header). Raises ConfigError naming
        ``KIOSKD_TOKEN`` or ``backend.token_file`` (never echoing the token) when neither gives one.
        """
        env = os.environ.get("KIOSKD_TOKEN", "")
        if env.strip():
            return _checked_token(env, "KIOSKD_TOKEN: ")
        assert self.backend is not None
        path = self.backend.token_file
        where = f"backend.token_file: {path}: "
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError([f"backend.token_file: cannot read {path}: {exc.strerror}"]) from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ConfigError([f"{where}not UTF-8 text"]) from None
        if not text.strip():
            raise ConfigError([f"backend.token_file: {path} is empty"])
        return _checked_token(text.splitlines()[0], where)


#: What a token may hold: printable ASCII, no spaces (RFC 6750 b64token and more).
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


def _checked_token(line: str, where: str) -> str:
    """``line`` without a BOM and surrounding whitespace, if it is a usable token; else ConfigError."""
    token = line.lstrip("\ufeff").strip()
    if not token:
        raise ConfigError([f"{where}the first line is empty (the token goes on line 1)"])
    if not _TOKEN_CHARS.fullmatch(token):
        bad = next(i for i, ch in enumerate(token) if not _TOKEN_CHARS.fullmatch(ch))
        kind = "a space" if token[bad].isspace() else "a control character" if not token[bad].isprintable() else "a non-ASCII character"
        raise ConfigError([f"{where}the token has {kind} at position {bad + 1}; it must be printable ASCII without spaces"])
    return token


# --------------------------------------------------------------------------- conversion

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _describe(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp) if a is not type(None))
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def convert(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    """Convert ``value`` (parsed TOML) to ``tp``; on failure, append ``"path: message"`` and return None.

    ``tp`` is a dataclass with a ``problems()`` method, a scalar, ``Literal``, ``Optional``,
    ``list[...]`` or ``dict[str, ...]``. Any config file of kioskd (the kiosk's, the
    backend's) is validated with it, so every error names its dotted key the same way.
    """
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a table, got {type(value).__name__}")
            return None
        hints = get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        for key in value:
            if key not in names:
                errors.append(f"{_join(path, key)}: unknown key (known: {', '.join(sorted(names))})")
        kwargs = {}
        before = len(errors)
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = convert(hints[f.name], value[f.name], _join(path, f.name), errors)
        if len(errors) > before:
            return None
        obj = tp(**kwargs)
        for key, message in obj.problems():
            errors.append(f"{_join(path, key)}: {message}")
        return obj
    if origin is Literal:
        if value in get_args(tp) and type(value) is type(get_args(tp)[0]):
            return value
        errors.append(f"{path}: expected {_describe(tp)}, got {value!r}")
        return None
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return convert(options[0], value, path, errors)
        for option in options:
            trial: list[str] = []
            result = convert(option, value, path, trial)
            if not trial:
                return result
        errors.append(f"{path}: expected {_describe(tp)}, got {type(value).__name__}")
        return None
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return None
        (item,) = get_args(tp)
        return [convert(item, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a table, got {type(value).__name__}")
            return None
        _, item = get_args(tp)
        return {k: convert(item, v, _join(path, k), errors) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (str, int, bool, float) and type(value) is tp:
        return value
    errors.append(f"{path}: expected {_describe(tp)}, got {type(value).__name__} {value!r}")
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def parse_as(tp: type[T], data: dict[str, Any]) -> T:
    """Validate a parsed TOML tree as ``tp``. Raises :class:`ConfigError` listing every problem."""
    errors: list[str] = []
    result = convert(tp, data, "", errors)
    if errors:
        raise ConfigError(errors)
    return result


def load_as(tp: type[T], path: str | os.PathLike[str]) -> T:
    """Read the TOML file ``path`` and validate it as ``tp``. Raises :class:`ConfigError`."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_as(tp, data)


def parse_config(data: dict[str, Any]) -> Config:
    """Validate a parsed kiosk config. Raises :class:`ConfigError` listing every problem."""
    return parse_as(Config, data)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a kiosk's ``config.toml``. Raises :class:`ConfigError` naming every bad key."""
    return load_as(Config, path)

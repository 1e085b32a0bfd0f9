"""The hardware checks: ``kioskd devices``, ``test-mic``, ``test-speaker`` (sound) and ``test-leds`` (light)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

import numpy as np
import trio

from kioskd.audio.devices import DeviceError, default_devices, list_devices, open_stream
from kioskd.audio.formats import dbfs
from kioskd.config import DEFAULT_CONFIG, ConfigError, LedConfig, load_config
from kioskd.hardware.leds import EXAMPLE_STATUS, UPDATE_HZ, LedDriver, LightState
from kioskd.state import StatusBoard

__all__ = ["devices_main", "test_leds_main", "test_mic_main", "test_speaker_main"]

METER_INTERVAL_S = 0.1
"""How often ``test-mic`` redraws its meter line."""
METER_FLOOR_DBFS = -60.0
"""Left end of the meter bar."""
METER_WIDTH = 40
"""Characters in the meter bar."""
TONE_HZ = 440.0
"""``test-speaker`` tone frequency."""
TONE_SECONDS = 1.0
"""``test-speaker`` tone length."""
TONE_FADE_S = 0.02
"""Fade in/out of the tone (no clicks)."""
TONE_AMPLITUDE = 0.3
"""Tone peak as a fraction of full scale."""
SECONDS_PER_PATTERN = 3.0
"""How long ``test-leds`` shows each light pattern."""


def devices_main(argv: list[str]) -> int:
    """Print input and output devices with their channels and default rates; explain an empty list."""
    argparse.ArgumentParser(prog="kioskd devices", description="list audio devices").parse_args(argv)
    try:
        found = list_devices()
        defaults = default_devices()
    except Exception as exc:  # PortAudio missing or broken: say so, do not trace back
        print(f"kioskd devices: cannot list devices: {exc}", file=sys.stderr)
        return 1
    for title, key in (("input", "max_input_channels"), ("output", "max_output_channels")):
        print(f"{title} devices:")
        default = defaults.get(title)  # type: ignore[call-overload]
        if default is not None:
            print(f"  {'':>3}  {'default':<40} (the system's default: {default!r})")
        rows = [d for d in found if getattr(d, key) > 0]
        for d in rows:
            print(f"  {d.index:>3}  {d.name:<40} channels={getattr(d, key):<4} rate={d.default_rate}")
        if not rows and default is None:
            print(f"  (none: {why_no_devices()})")
    print('use a name (or a unique part of it) as audio.input / audio.output, "default", or "wav:/path.wav"')
    return 0


def why_no_devices(cards: str = "/proc/asound/cards", snd: str = "/dev/snd") -> str:
    """Why PortAudio lists no device: no sound card, or no permission to use it."""
    try:
        with open(cards) as f:
            listed = f.read().strip()
    except OSError:
        listed = ""
    if not listed or listed.startswith("---") or "no soundcards" in listed:
        return f"no sound card found ({cards} lists none): check the USB audio device or the HAT's dtoverlay"
    try:
        nodes = [os.path.join(snd, name) for name in os.listdir(snd) if name.startswith(("pcmC", "controlC"))]
    except OSError:
        nodes = []
    if nodes and not any(os.access(node, os.R_OK | os.W_OK) for node in nodes):
        return (
            f"this user may not open {snd}: add it to the audio group (sudo usermod -aG audio $USER, then log in again)"
        )
    return "a sound card exists but ALSA offers no device for it: check ~/.asoundrc or /etc/asound.conf"


def meter_line(level: float) -> str:
    """One redraw of the meter: a bar and the level in dBFS."""
    fill = round(METER_WIDTH * (max(level, METER_FLOOR_DBFS) - METER_FLOOR_DBFS) / -METER_FLOOR_DBFS)
    return f"\r[{'#' * fill}{' ' * (METER_WIDTH - fill)}] {level:6.1f} dBFS"


def test_mic_main(argv: list[str]) -> int:
    """Show a live microphone level meter through the real AudioEngine."""
    parser = argparse.ArgumentParser(prog="kioskd test-mic", description="live microphone level meter")
    parser.add_argument("--config", help="config.toml (its [audio] section)")
    parser.add_argument("--device", help="input device name (overrides the config)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after N seconds (default: until Ctrl-C)")
    args = parser.parse_args(argv)
    import dataclasses

    from kioskd.config import AudioConfig, ConfigError, load_config

    try:
        audio = load_config(args.config).audio if args.config else AudioConfig()
    except ConfigError as exc:
        print(f"kioskd test-mic: {exc}", file=sys.stderr)
        return 2
    audio = dataclasses.replace(audio, echo="off", **({"input": args.device} if args.device else {}))
    try:
        return trio.run(_meter, audio, args.seconds)
    except KeyboardInterrupt:
        print()
        return 0


async def _meter(audio: object, seconds: float) -> int:
    from kioskd.audio.engine import AudioEngine

    engine = AudioEngine(audio)  # type: ignore[arg-type]
    window: list[np.ndarray] = []
    engine.add_frame_listener(lambda frame, t: window.append(frame))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        status = engine.status()
        print(f"input {status['input_device']!r}: {status['input_format'] or status['last_device_error']}")
        deadline = trio.current_time() + seconds if seconds > 0 else float("inf")
        while trio.current_time() < deadline:
            await trio.sleep(METER_INTERVAL_S)
            level = dbfs(np.concatenate(window)) if window else float("nan")
            window.clear()
            sys.stdout.write("\r(no audio)" if np.isnan(level) else meter_line(level))
            sys.stdout.flush()
        nursery.cancel_scope.cancel()
    print()
    return 0 if engine.status()["input_ok"] else 1


def tone(rate: int) -> np.ndarray:
    """The ``test-speaker`` tone: :data:`TONE_HZ` for :data:`TONE_SECONDS`, faded in and out."""
    n = int(rate * TONE_SECONDS)
    wave = TONE_AMPLITUDE * 32767 * np.sin(2 * np.pi * TONE_HZ * np.arange(n) / rate)
    fade = min(n // 2, int(rate * TONE_FADE_S))
    ramp = np.linspace(0.0, 1.0, fade)
    wave[:fade] *= ramp
    wave[n - fade :] *= ramp[::-1]
    return wave.astype(np.int16)


def test_speaker_main(argv: list[str]) -> int:
    """Play a 1 s 440 Hz tone on the speaker: the config's ``audio.output`` (or ``--device``)."""
    parser = argparse.ArgumentParser(prog="kioskd test-speaker", description="play a short tone")
    parser.add_argument("--config", help="config.toml (its [audio] output, output_rate and volume)")
    parser.add_argument("--device", help="output device name (overrides the config; default: default)")
    parser.add_argument("--rate", type=int, help="sample rate (default: the config's, else the device's)")
    args = parser.parse_args(argv)
    volume = 1.0
    device, rate = "default", 0
    if args.config:
        try:
            audio = load_config(args.config).audio
        except ConfigError as exc:
            print(f"kioskd test-speaker: {exc}", file=sys.stderr)
            return 2
        device, rate, volume = audio.output, audio.output_rate, audio.volume
    args.device = args.device or device
    args.rate = rate if args.rate is None else args.rate
    try:
        stream = open_stream(args.device, "output", args.rate, 10)
    except DeviceError as exc:
        print(f"kioskd test-speaker: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"playing {TONE_HZ:.0f} Hz on {stream.name!r} at {stream.rate} Hz x{stream.channels}")
        samples = np.round(tone(stream.rate) * volume).astype(np.int16)
        period = stream.rate // 100
        silence = np.zeros(period * 10, dtype=np.int16)  # let the device drain the tone
        for block in (samples, silence):
            for i in range(0, len(block), period):
                part = block[i : i + period]
                stream.write(np.repeat(part, stream.channels) if stream.channels > 1 else part)
    except (DeviceError, OSError) as exc:
        print(f"kioskd test-speaker: {exc}", file=sys.stderr)
        return 1
    finally:
        stream.close()
    return 0


# --------------------------------------------------------------------------- kioskd test-leds


async def _step_through(config: LedConfig, seconds: float, out: Any) -> int:
    board = StatusBoard()
    driver = LedDriver(config, board)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        if config.kind != "none" and not driver.available:
            print(f"test-leds: status light unavailable: {driver.unavailable_reason}", file=sys.stderr)
            nursery.cancel_scope.cancel()
            return 1
        for state in LightState:
            print(f"{state}: {_describe(state)}", file=out, flush=True)
            status = EXAMPLE_STATUS[state]
            shown = ("state", "agent_speaking", "mic_live", "problems")
            board.update(**{f: getattr(status, f) for f in shown}, vad_score=0.0)
            end = trio.current_time() + seconds
            while (now := trio.current_time()) < end:
                if state == LightState.LISTENING:  # sweep the VAD score so the level is visible
                    board.update(vad_score=(1.0 - math.cos(2 * math.pi * now / 2.0)) / 2.0)
                await trio.sleep(1.0 / UPDATE_HZ)
        nursery.cancel_scope.cancel()
    return 0


_DESCRIPTIONS: dict[LightState, str] = {
    LightState.IDLE: "slow dim breathing (white)",
    LightState.CONNECTING: "fast blink (blue)",
    LightState.LISTENING: "steady, brightness follows the voice; never below 30 % (green)",
    LightState.SPEAKING: "steady full (cyan)",
    LightState.RECONNECTING: "double blink (amber)",
    LightState.OFFLINE: "slow blink (red)",
    LightState.ERROR: "fast flash (red)",
    LightState.FAULT: "1 s on, 1 s off: idle, but something is broken (amber)",
    LightState.CLOSED: "steady, dim: out of service (violet)",
}


def _describe(state: LightState) -> str:
    return _DESCRIPTIONS[state]


def test_leds_main(argv: list[str]) -> int:
    """``kioskd test-leds [--config PATH] [--seconds-per-pattern N]``: show every pattern in turn."""
    parser = argparse.ArgumentParser(prog="kioskd test-leds", description="step the status light through every pattern")
    parser.add_argument("--config", help=f"config.toml (default: {DEFAULT_CONFIG} if it exists)")
    parser.add_argument("--seconds-per-pattern", type=float, default=SECONDS_PER_PATTERN, metavar="N")
    args = parser.parse_args(argv)
    if args.seconds_per_pattern <= 0:
        parser.error("--seconds-per-pattern must be positive")
    path = args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
    config = LedConfig()
    if path is not None:
        try:
            config = load_config(path).leds
        except ConfigError as exc:
            for problem in exc.problems:
                print(f"test-leds: {problem}", file=sys.stderr)
            return 2
    if config.kind == "none":
        print("test-leds: leds.kind is \"none\": no light configured; showing the pattern names only")
    return trio.run(_step_through, config, args.seconds_per_pattern, sys.stdout)


test_leds_main.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name

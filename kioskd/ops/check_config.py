"""``kioskd check-config --config PATH [--online]``: is this kiosk ready?

Offline (default): the file is valid, nothing is left at the shipped placeholders, GPIO
pins are not shared, ``wav:`` files and cue sounds are readable WAV files, the token
file is readable. Exit 0, or 2 with one line per problem naming the key.

``--online`` also tries the real things, one line per check: opens the microphone and
the speaker (naming the devices that exist when one is missing) and fetches one signed
URL from the backend (token accepted? agent allowed?). Exit 1 if one of them fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from kioskd.config import DEFAULT_CONFIG, Config, ConfigError, load_config

__all__ = ["main", "offline_problems", "online_checks"]

#: One online check: (name, passed, what was found).
Check = tuple[str, bool, str]


def offline_problems(path: str) -> tuple[Config | None, list[str]]:
    """The config (None if unusable) and every problem found without touching devices or the network."""
    from kioskd.ops.problems import readiness_problems

    try:
        config = load_config(path)
    except ConfigError as exc:
        return None, exc.problems
    problems = readiness_problems(config)
    if config.backend is not None:
        try:
            config.backend.kiosk_token()
        except ConfigError as exc:
            problems += exc.problems
    return config, problems


def _device_check(config: Config, direction: str) -> Check:
    from kioskd.audio.devices import DeviceError, open_stream

    name = getattr(config.audio, direction)
    rate = getattr(config.audio, f"{direction}_rate")
    key = f"audio.{direction}"
    try:
        stream = open_stream(name, direction, rate, config.audio.device_period_ms)  # type: ignore[arg-type]
    except DeviceError as exc:
        return key, False, f"{exc} (kioskd devices lists them)"
    except Exception as exc:  # PortAudio missing or broken: say so, never trace back
        return key, False, f"cannot open {name!r}: {exc}"
    try:
        return key, True, f"{name!r} opened: {stream.name!r} at {stream.rate} Hz x{stream.channels}"
    finally:
        stream.close()


async def _backend_check(config: Config) -> Check:
    import httpx

    from kioskd.backend.client import SignedUrlError, fetch_signed_url

    if config.backend is None:
        return "backend", True, f"none: public agent {config.agent.agent_id!r} on {config.agent.server}"
    explain = {
        "unauthorized": "check /etc/kioskd/token against the backend's token_sha256 for this kiosk",
        "forbidden": f"add {config.agent.agent_id!r} to this kiosk's agents in the backend's config",
    }
    async with httpx.AsyncClient(follow_redirects=False) as client:
        try:
            await fetch_signed_url(client, config.backend, config.agent.agent_id, config.backend.kiosk_token())
        except SignedUrlError as exc:
            hint = explain.get(exc.kind)
            return "backend", False, f"{config.backend.url}: {exc}" + (f" ({hint})" if hint else "")
    return "backend", True, f"{config.backend.url}: token accepted, signed URL for {config.agent.agent_id!r} received"


def online_checks(config: Config, device_check: Callable[[Config, str], Check] = _device_check) -> list[Check]:
    """Open the devices and fetch one signed URL; one result per check (never raises)."""
    import trio

    checks = [device_check(config, "input"), device_check(config, "output")]
    checks.append(trio.run(_backend_check, config))
    return checks


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kioskd check-config", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--online", action="store_true",
                        help="also open the audio devices and fetch one signed URL from the backend")
    args = parser.parse_args(argv)
    config, problems = offline_problems(args.config)
    if problems or config is None:
        for line in problems:
            print(line, file=sys.stderr)
        return 2
    if not args.online:
        print(f"{args.config}: ok")
        return 0
    print(f"ok    config: {args.config}")
    failed = False
    for name, passed, detail in online_checks(config):
        print(f"{'ok  ' if passed else 'FAIL'}  {name}: {detail}")
        failed = failed or not passed
    return 1 if failed else 0

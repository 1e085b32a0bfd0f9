"""``kioskd simulator``: run the simulated agent and signing backend until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import trio

from kioskd.audio.formats import PCM_RATES, ULAW_RATES
from kioskd.simulator import Simulator, SimulatorConfig, open_simulator
from kioskd.simulator.settings import DEFAULT_KIOSK_TOKEN, LEGACY

__all__ = ["API_KEY_ENV", "KIOSK_TOKEN_ENV", "build_parser", "config_from_args", "describe", "main"]

#: The simulator's secrets come from the environment or a file, never the command line (ps shows it).
KIOSK_TOKEN_ENV = "KIOSKD_SIM_KIOSK_TOKEN"
API_KEY_ENV = "KIOSKD_SIM_API_KEY"

#: Every format string the service documents.
SUPPORTED_FORMATS = tuple(f"pcm_{r}" for r in PCM_RATES) + tuple(f"ulaw_{r}" for r in ULAW_RATES)


def build_parser() -> argparse.ArgumentParser:
    """The command's options."""
    parser = argparse.ArgumentParser(prog="kioskd simulator", description=__doc__)
    defaults = SimulatorConfig()
    parser.add_argument("--host", default=defaults.host, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="agent WebSocket port, 0 = any (default %(default)s)")
    parser.add_argument(
        "--backend-port", type=int, default=8766, help="signing backend port, 0 = any (default %(default)s)"
    )
    parser.add_argument("--input-format", choices=SUPPORTED_FORMATS, default=defaults.input_format)
    parser.add_argument("--output-format", choices=SUPPORTED_FORMATS, default=defaults.output_format)
    parser.add_argument("--agent-id", default=defaults.agent_id)
    parser.add_argument("--kiosk-token-file", help=f"file whose first line is the bearer token the backend accepts "
                        f"(else ${KIOSK_TOKEN_ENV}, else the demo token)")
    parser.add_argument("--api-key-file", help=f"file whose first line is the xi-api-key the upstream endpoint accepts "
                        f"(else ${API_KEY_ENV}, else the demo key)")
    for flag in ("--kiosk-token", "--api-key"):
        parser.add_argument(flag, action=_RefuseSecretArgument, help=argparse.SUPPRESS)
    parser.add_argument("--public", action="store_true", help="accept conversations without a signed-URL token")
    parser.add_argument("--reply-seconds", type=float, default=defaults.reply_seconds)
    parser.add_argument("--silence-timeout", type=float, default=defaults.silence_timeout)
    parser.add_argument("--no-tool-call", action="store_true", help="do not send the scripted client_tool_call")
    parser.add_argument("--first-message", default=defaults.first_message,
                        help='the agent\'s greeting ("" = it waits for the visitor; default %(default)r)')
    parser.add_argument("--legacy", action="store_true",
                        help="the pre-issue-12 behaviour: every event type, an id per audio chunk, no greeting")
    return parser


def _token_hint(cfg: SimulatorConfig) -> str:
    """Which kiosk token the simulator accepts: the demo default is named, one set by the operator is not."""
    if not cfg.require_token:
        return "none needed (--public)"
    if cfg.kiosk_token == DEFAULT_KIOSK_TOKEN:
        return (f"{DEFAULT_KIOSK_TOKEN}   (the demo default and the only one accepted; "
                f"${KIOSK_TOKEN_ENV} or --kiosk-token-file changes it)")
    return f"the one in ${KIOSK_TOKEN_ENV} or --kiosk-token-file (the only one accepted)"


class _RefuseSecretArgument(argparse.Action):
    """A secret given as an argument: refused without echoing it (every local user can read argv)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        env = KIOSK_TOKEN_ENV if option_string == "--kiosk-token" else API_KEY_ENV
        parser.error(f"{option_string} would be visible to every local user in ps; "
                     f"use ${env} or {option_string}-file PATH instead")


def _secret(file: str | None, env: str, default: str) -> str:
    if file is not None:
        try:
            lines = Path(file).read_text().splitlines()
        except OSError as exc:
            print(f"kioskd simulator: cannot read {file}: {exc.strerror}", file=sys.stderr)
            raise SystemExit(2) from None
        if not lines or not lines[0].strip():
            print(f"kioskd simulator: {file}: the first line is empty", file=sys.stderr)
            raise SystemExit(2)
        return lines[0].strip()
    return os.environ.get(env, "").strip() or default


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """The simulator's settings from parsed arguments, its secrets from files or the environment."""
    defaults = SimulatorConfig()
    return SimulatorConfig(
        **(LEGACY if args.legacy else {"first_message": args.first_message}),
        host=args.host,
        port=args.port,
        backend_port=args.backend_port,
        agent_id=args.agent_id,
        kiosk_token=_secret(args.kiosk_token_file, KIOSK_TOKEN_ENV, defaults.kiosk_token),
        api_key=_secret(args.api_key_file, API_KEY_ENV, defaults.api_key),
        require_token=not args.public,
        input_format=args.input_format,
        output_format=args.output_format,
        reply_seconds=args.reply_seconds,
        silence_timeout=args.silence_timeout,
        tool_call=None if args.no_tool_call else defaults.tool_call,
    )


def describe(sim: Simulator) -> str:
    """What to tell the user: where things listen, how to point a kiosk at them (no secrets but the demo token)."""
    cfg = sim.config
    return "\n".join(
        [
            f"agent (WebSocket):  {sim.ws_base}/v1/convai/conversation?agent_id={cfg.agent_id}",
            f"signing backend:    {sim.backend_url}?agent_id={cfg.agent_id}   (Authorization: Bearer <kiosk token>)",
            f"ElevenLabs-style:   {sim.api_base}/v1/convai/conversation/get_signed_url   (xi-api-key)",
            f"agent id:           {cfg.agent_id}",
            f"audio formats:      in {cfg.input_format}, out {cfg.output_format}",
            "",
            "kiosk config hint:",
            "  [agent]",
            f'  agent_id = "{cfg.agent_id}"',
            f'  server = "{sim.ws_base}"' + ("   # public agent: no backend needed" if not cfg.require_token else ""),
            "  [backend]",
            f'  url = "{sim.backend_url}"',
            '  token_file = "…"   # a file containing the kiosk token below',
            "",
            f"kiosk token:        {_token_hint(cfg)}",
            "",
            "Ctrl-C to stop.",
        ]
    )


async def _serve(config: SimulatorConfig) -> None:
    async with open_simulator(config) as sim:
        print(describe(sim), flush=True)
        await trio.sleep_forever()


def main(argv: list[str]) -> int:
    """Run until Ctrl-C; exit 2 on bad arguments or a port in use."""
    config = config_from_args(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    status = 0
    try:
        trio.run(_serve, config)
    except* KeyboardInterrupt:
        pass
    except* OSError as group:
        print(f"kioskd simulator: cannot listen: {_leaf(group)}", file=sys.stderr)
        status = 2
    return status


def _leaf(error: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


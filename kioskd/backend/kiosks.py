"""``kioskd backend kiosks add ID --agent AGENT | revoke ID | list``: the kiosk registry.

With ``redis_url`` in ``backend.toml`` the registry lives in Redis: a kiosk added
here can ask for signed URLs at once, from every replica, and a revoked one is
refused by every replica on its next request (each checks Redis per request).
Without Redis the TOML list is the registry: ``add`` prints the ``[[kiosk]]`` table
to paste, ``revoke`` says which table to remove.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys

import trio

from kioskd.backend.server import hash_token
from kioskd.backend.server_config import BackendServerConfig, KioskEntry, load_server_config_for
from kioskd.backend.store import Store, StoreUnavailable, open_store

__all__ = ["main"]

TOKEN_BYTES = 32
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kioskd backend kiosks", description="Manage the kiosks allowed to ask for signed URLs."
    )
    parser.add_argument("--config", default="/etc/kioskd/backend.toml", help="backend.toml (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="register a kiosk and print its new token (once)")
    add.add_argument("id")
    add.add_argument("--agent", action="append", required=True, help="an agent id it may use (repeat for more)")
    revoke = sub.add_parser("revoke", help="refuse a kiosk's token from now on")
    revoke.add_argument("id")
    listing = sub.add_parser("list", help="every kiosk: TOML and registry, revoked ones marked")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def _toml_table(entry: KioskEntry) -> str:
    agents = ", ".join(json.dumps(a) for a in entry.agents)
    return f"[[kiosk]]\nid = {json.dumps(entry.id)}\ntoken_sha256 = \"{entry.token_sha256}\"\nagents = [{agents}]"


async def _run(config: BackendServerConfig, args: argparse.Namespace) -> int:
    async with open_store(config) as store:
        return await _command(store, config, args)


async def _command(store: Store, config: BackendServerConfig, args: argparse.Namespace) -> int:
    if args.command == "add":
        token = secrets.token_urlsafe(TOKEN_BYTES)
        entry = KioskEntry(id=args.id, token_sha256=hash_token(token), agents=list(args.agent))
        try:
            await store.add_kiosk(entry)
        except ValueError as exc:
            print(f"kioskd backend kiosks: cannot add {args.id!r}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        if not config.redis_url:
            print("# no redis_url: paste this into backend.toml and restart the backend")
            print(_toml_table(entry))
        else:
            print(f"# kiosk {args.id!r} added; every replica accepts it now")
        print(f"token = {token}")
        print("# the token goes in the kiosk's /etc/kioskd/token (mode 0600); it is not shown again")
        return 0
    if args.command == "revoke":
        if not config.redis_url:
            print(
                f"kioskd backend kiosks: no redis_url; remove the [[kiosk]] table with id = {args.id!r} "
                "from backend.toml and restart the backend",
                file=sys.stderr,
            )
            return EXIT_USAGE
        if not await store.revoke(args.id):
            print(f"kioskd backend kiosks: no kiosk {args.id!r}", file=sys.stderr)
            return EXIT_FAILED
        print(f"# kiosk {args.id!r} revoked; every replica refuses its token from its next request")
        return 0
    for record in await store.kiosks():
        if args.json:
            entry, source, revoked = record.entry, record.source, record.revoked
            print(json.dumps({"id": entry.id, "agents": entry.agents, "source": source, "revoked": revoked}))
        else:
            flag = "  REVOKED" if record.revoked else ""
            print(f"{record.entry.id}\t{record.source}\t{','.join(record.entry.agents)}{flag}")
    return 0


def main(argv: list[str]) -> int:
    """``kioskd backend kiosks [--config PATH] add|revoke|list``."""
    args = _parser().parse_args(argv)
    config = load_server_config_for("kioskd backend kiosks", args.config)
    if config is None:
        return EXIT_USAGE
    try:
        return trio.run(_run, config, args)
    except StoreUnavailable as exc:
        print(f"kioskd backend kiosks: {exc}", file=sys.stderr)
        return EXIT_FAILED

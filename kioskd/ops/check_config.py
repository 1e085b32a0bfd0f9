"""``kioskd check-config --config PATH``: exit 0 if the file is usable, else 2 with one line per problem."""

from __future__ import annotations

import argparse
import sys

from kioskd.config import DEFAULT_CONFIG, ConfigError, load_config


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kioskd check-config", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if config.backend is not None:
            config.kiosk_token()
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2
    print(f"{args.config}: ok")
    return 0

"""`python -m resonfl_server.launcher worker|aggregator|up`: the platform's commands without the
rest of the CLI (what `resonfl up` runs in its children)."""

from __future__ import annotations

import argparse
import sys

from resonfl_server.launcher.commands import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resonfl")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""
The operator CLI: `python -m fastapi_retry_http` (or `fastapi-retry-http`).

- `check` loads the settings the way the app does, validates them, builds each client once
  and prints every setting in effect (the store too), secrets masked.
- `probe NAME...` sends one request through each named client, configured for real, and
  reports what it requested, the status, latency, TLS and attempts.

Both take `--env-file PATH` (a `.env` file read as the app's settings class would read it)
and `--settings MODULE:CLASS` (the app's own settings class, importable from the current
directory). Plain text, no dependency beyond the library's: every line fits 80 columns.
Exit codes: 0 fine, 1 invalid configuration, a failed probe or a closed output pipe, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import textwrap
from collections.abc import Sequence
from importlib.metadata import version
from typing import TextIO

from .load import Invalid, load
from .probe import probe
from .show import WIDTH, check, fit

__all__ = ["main"]

_EXIT_OK, _EXIT_INVALID, _EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with `argv` (the process arguments if `None`) and return its exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 2 on usage errors, 0 for --help and --version
        return int(exit_.code or 0)
    if args.settings_path is not None and args.env_file is not None:
        print("error: give the .env file once: --env-file PATH", file=sys.stderr)
        return _EXIT_USAGE
    out: TextIO = sys.stdout
    try:
        loaded = load(args.settings, args.env_file or args.settings_path)
        if args.command == "check":
            code = check(loaded, out)
        else:
            code = asyncio.run(probe(loaded.clients, args.names, args.method, args.path, out))
        out.flush()  # here, so that a reader that went away is noticed here
        return code
    except Invalid as error:
        for problem in str(error).splitlines():
            for line in textwrap.wrap(f"error: {problem}", WIDTH, subsequent_indent="    ", break_on_hyphens=False):
                print(fit(line), file=sys.stderr)
        return _EXIT_INVALID
    except BrokenPipeError:
        # `fastapi-retry-http check | head`: the reader left. Quietly, as other tools do;
        # stdout goes to devnull so that the interpreter's last flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return _EXIT_INVALID


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastapi-retry-http",
        description="Check and probe the HTTP clients configured for a service.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('fastapi-retry-http')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--settings",
        metavar="MODULE:CLASS",
        help="the app's pydantic-settings class, importable from the current directory "
        "(default: the library's, HTTP_CLIENTS__...)",
    )
    shared.add_argument("--env-file", metavar="PATH", help="a .env file to read, as Settings(_env_file=PATH) would")
    check_ = commands.add_parser(
        "check", parents=[shared], help="validate the settings and print every setting in effect"
    )
    # The first way `check` took its .env file, kept working.
    check_.add_argument("settings_path", nargs="?", metavar="ENV_FILE", help="the same as --env-file")
    probe_ = commands.add_parser("probe", parents=[shared], help="send one request through each named client")
    probe_.add_argument("names", nargs="+", metavar="NAME", help="client names")
    probe_.add_argument("--path", default="", help="the path to request, relative to the base URL (default: none)")
    probe_.add_argument("--method", default="HEAD", type=str.upper, help="the method (default: HEAD)")
    probe_.set_defaults(settings_path=None)
    return parser

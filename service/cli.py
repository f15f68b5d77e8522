"""`quantray` command line. Subcommands live next to the layer they drive and are
imported only when used, so `quantray --help` stays fast and light."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand -> module exposing `register(subparsers)`; each registers its own parser
# and sets `func` on it.
_COMMANDS: dict[str, str] = {
    "data": "data.cli",
    "train": "models.cli",
    "serve": "service.cli_serve",
    # submit, status, list, results, cancel, resume, logs, models: one module registers all.
    "submit": "service.cli_jobs",
    "keys": "service.cli_keys",
    "demo": "service.cli_demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quantray",
        description="quantray: Ray-based distributed training for market forecasting models.",
    )
    # Also taken before the command (`quantray --api URL list`); after it wins. Their own
    # dests: a subcommand's defaults would overwrite values parsed here under the same dest.
    parser.add_argument("--api", dest="global_api", metavar="API",
                        help="API URL of the job commands (also accepted after the command)")
    parser.add_argument("--api-key", dest="global_api_key", metavar="API_KEY",
                        help="API key of the job commands (also accepted after the command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMANDS.values():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit: a closed pipe then raises below
        return code
    except BrokenPipeError:  # the reader went away (`quantray ... | head`): stop quietly,
        # with stdout on /dev/null so the interpreter's final flush raises nothing either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command a pipe stopped


if __name__ == "__main__":
    sys.exit(main())

"""Entry point of the ``star`` command.

Each command group lives in its own module with a ``register(subparsers)`` function that adds
its parsers and sets ``handler`` (a function of the parsed ``argparse.Namespace`` returning an exit
code). Heavy imports (JAX, Ray) happen inside handlers, so ``star --help`` stays fast.

Errors a user can fix (bad flags, bad values, missing data or files) end the command with one
readable line on stderr and exit code 2 (``USER_ERROR_EXIT``); nothing else is printed. The client
commands (submit, jobs, watch, ...) raise ``services.cli.client.ClientError``, a ValueError that
carries its own exit code: 1 when the server could not serve a request (no server, overloaded,
failed job).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from services.cli.client import USER_ERROR_EXIT

# Command-group modules under services.cli, in the order `star --help` lists them.
COMMAND_MODULES = ("demo", "serve", "jobs", "watch", "fetch", "schedule", "train", "nqm", "data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="star",
        description="STAR: meta-train, evaluate and analyse stable learned optimizers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"services.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"star: error: {message}", file=sys.stderr)
        return getattr(err, "exit_code", USER_ERROR_EXIT)
    except KeyboardInterrupt:
        print("star: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Shared command-line plumbing for jobs: ``--config``, dotted overrides, one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence, TypeVar

from sseg.config import StrictModel, load_config
from sseg.errors import ConfigError, SsegError

T = TypeVar("T", bound=StrictModel)


def job_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML config file (defaults apply to missing fields)")
    parser.add_argument("overrides", nargs="*", metavar="section.field=value",
                        help="override config fields, e.g. train.steps=100")
    return parser


def take_subcommand(args: argparse.Namespace, name: str) -> bool:
    """True (and removed from the overrides) when the job was called as ``jobs/x.py <name> …``; a subcommand
    starts new runs, so it refuses ``--resume``."""
    if not (args.overrides and args.overrides[0] == name):
        return False
    args.overrides = args.overrides[1:]
    if getattr(args, "resume", None):
        raise ConfigError(f"--resume continues one run; '{name}' starts new ones")
    return True


def parse_job_config(cls: type[T], args: argparse.Namespace) -> T:
    return load_config(cls, args.config, args.overrides)


def run_job(main: Callable[[Sequence[str] | None], int | None],
            argv: Sequence[str] | None = None) -> None:
    """Run ``main``; a :class:`SsegError` becomes ``error: <one line>`` on stderr and exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = main(argv)
    except SsegError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    sys.exit(code or 0)

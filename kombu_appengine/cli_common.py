"""What every console script of the project shares: ``--version`` and ``--log-level``.

``pullqueue_emulator``, ``pullqueue_worker`` and ``pullqueue_authenticate``
each build their own :class:`argparse.ArgumentParser`; the options here are
added by the functions below so that all of them behave, and fail, alike.
"""

from __future__ import annotations

import argparse
import logging

from . import __version__

#: The logging levels ``--log-level`` offers (any case; ``WARN`` is taken too).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(value: str) -> str:
    """An argparse ``type=``: the logging level named ``value``, upper-cased.

    Raises:
        argparse.ArgumentTypeError: ``value`` names no logging level; argparse
            turns it into one error line naming the option and the levels.
    """
    name = value.upper()
    # getLevelName maps a registered name to its number, anything else to a string.
    if not isinstance(logging.getLevelName(name), int):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a logging level: use one of {', '.join(LOG_LEVELS)}"
        )
    return name


def add_log_level_option(parser: argparse.ArgumentParser, default: str) -> None:
    """Add ``--log-level LEVEL``, checked by :func:`log_level`, with ``default``."""
    parser.add_argument(
        "--log-level",
        type=log_level,
        default=default,
        metavar="LEVEL",
        help=f"logging level: {', '.join(LOG_LEVELS)} (default: %(default)s)",
    )


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--version``: prints ``PROG VERSION`` (the package's version) and exits 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

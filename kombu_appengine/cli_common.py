"""What every console script of the project shares: ``--version``,
``--log-level`` and ``--log-format`` (with the JSON log formatter), the
connection options of the commands that talk to the API, where the servers
listen, and the argparse ``type=`` functions that check values.

``pullqueue_emulator``, ``pullqueue_gateway``, ``pullqueue_worker``,
``pullqueue_status``, ``pullqueue_authenticate`` and the demo each build
their own :class:`argparse.ArgumentParser`; the options here are added by
the functions below, and numbers and names are checked by the ``type=``
functions below, so that all of them behave, and fail, alike: a bad value
is one argparse error line naming the flag and what it takes (``argument
--num-tasks: '0' is not an integer from 1 to 1000``), before anything starts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import signal
import sys
import traceback
from typing import Any, Callable, NoReturn, Protocol

from . import __version__
from .api import PROJECT_ID_RE, bare_project

#: The logging levels ``--log-level`` offers (any case; ``WARN`` is taken too).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The formats ``--log-format`` offers: lines for people, or one JSON object a line.
LOG_FORMATS = ("text", "json")
#: The attributes every :class:`logging.LogRecord` has; anything else on a
#: record came from ``extra=`` and goes into a JSON line's ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


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


def add_log_format_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-format text|json`` (default ``text``)."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log lines as text, or one JSON object a line for log pipelines (default: %(default)s)",
    )


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, ``process`` (the pid) and ``process_name``; ``exception`` (the
    exception's type and text) and ``traceback`` when the record carries one,
    ``stack`` with ``stack_info``, and ``extra`` with what ``extra=`` added.

    A traceback is a field of its line, never lines of its own, so a log
    pipeline reading a line at a time keeps it with its message. Values that
    JSON cannot hold (in ``extra``, say) are written as their ``repr``: a log
    call never fails for what it carries.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (no newline inside)."""
        document: dict[str, Any] = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "process_name": record.processName,
        }
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            document["exception"] = "".join(traceback.format_exception_only(type(error), error)).strip()
            document["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["traceback"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        extra = {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}
        if extra:
            document["extra"] = extra
        return json.dumps(document, default=repr, ensure_ascii=False)


def configure_logging(level: str, log_format: str, text_format: str) -> None:
    """Log to stderr at ``level``, as ``text_format`` lines or (``json``) with :class:`JsonFormatter`.

    With ``json``, Python's warnings are logged too (``py.warnings``), so
    that every line on stderr is JSON. Like :func:`logging.basicConfig`, it
    does nothing when the root logger has a handler already (a forked
    worker process inherits its parent's).
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(text_format))
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(log_format == "json")


def fail(prog: str, message: str, log_format: str) -> NoReturn:
    """Stop the command with ``message``: ``PROG: MESSAGE`` on stderr, or with
    ``--log-format json`` a CRITICAL JSON line, so that stderr stays all JSON; exit status 1."""
    if log_format == "json":
        logging.getLogger(f"kombu_appengine.{prog}").critical("%s", message)
        sys.exit(1)
    sys.exit(f"{prog}: {message}")


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Add how a command reaches the API: ``--project``, ``--hrd-project``,
    ``--api-endpoint`` and ``--credentials`` (``TASKQUEUE_EMULATOR_HOST`` works too)."""
    parser.add_argument("--project", help="the App Engine application id (not needed with an emulator)")
    parser.add_argument("--hrd-project", action="store_true", help="send the project as s~PROJECT")
    parser.add_argument(
        "--api-endpoint",
        type=endpoint_url,
        metavar="URL",
        help="base URL of another server speaking the API, such as a deployed gateway (default: Google's)",
    )
    parser.add_argument(
        "--credentials",
        metavar="FILE",
        help="credentials file (from pullqueue_authenticate, a service-account key, an authorized-user "
        "file, or any other kind google-auth loads); default: Application Default Credentials",
    )


def connection_options(args: argparse.Namespace) -> dict[str, Any]:
    """The transport options that :func:`add_connection_options`'s flags give."""
    options: dict[str, Any] = {"hrd_project": args.hrd_project}
    if args.project:
        options["project_name"] = args.project
    if args.credentials:
        options["credentials_file"] = args.credentials
    if args.api_endpoint:
        options["api_endpoint"] = args.api_endpoint
    return options


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--version``: prints ``PROG VERSION`` (the package's version) and exits 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=``: a whole number from ``low`` to ``high`` (no bound when ``None``).

    The function it gives raises :class:`argparse.ArgumentTypeError` for
    anything else; argparse makes that one error line naming the flag.
    """
    if high is not None:
        takes = f"an integer from {low} to {high}"
    else:
        takes = {0: "zero or a positive integer", 1: "a positive integer"}.get(
            low, f"an integer of at least {low}"
        )

    def check(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {takes}") from None
        if number < low or (high is not None and number > high):
            raise argparse.ArgumentTypeError(f"{value!r} is not {takes}")
        return number

    return check


def number(
    unit: str, zero: bool = False, high: float | None = None, low: float | None = None
) -> Callable[[str], float]:
    """An argparse ``type=``: a finite number of ``unit`` (seconds, say), above 0 or, with ``zero``, from 0.

    NaN and infinities are refused whatever the bounds: every comparison
    with NaN is false, so a NaN taken here would slip past later checks
    (and crash whatever computes with it).

    Parameters:
        unit: what the number counts, for the error line.
        zero: whether 0 is taken.
        high: the largest value taken, if any.
        low: the smallest value taken, if any (above 0): it replaces ``zero``.
    """
    floor, floor_taken = (low, True) if low is not None else (0.0, zero)
    lowest = f"{floor:g}" if floor_taken else "above 0"
    if high is not None:
        takes = f"a number of {unit} from {lowest} to {high:g}"
    elif low is not None:
        takes = f"a number of {unit} of at least {lowest}"
    else:
        takes = f"{'zero or ' if zero else ''}a positive number of {unit}"

    def check(value: str) -> float:
        try:
            parsed = float(value)
        except ValueError:
            parsed = math.nan
        in_range = parsed >= floor if floor_taken else parsed > floor
        if not (math.isfinite(parsed) and in_range and (high is None or parsed <= high)):
            raise argparse.ArgumentTypeError(f"{value!r} is not {takes}")
        return parsed

    return check


def not_empty(what: str, hint: str = "") -> Callable[[str], str]:
    """An argparse ``type=``: any text but the empty string (a queue name, a path, an address).

    Parameters:
        what: what the value is ("a queue name"), for the error line.
        hint: what to give instead, if anything, added to the error line.
    """
    message = f"{what} must not be empty" + (f" ({hint})" if hint else "")

    def check(value: str) -> str:
        if not value:
            raise argparse.ArgumentTypeError(message)
        return value

    return check


def endpoint_url(value: str) -> str:
    """An argparse ``type=``: a server's URL, checked as the transport option ``api_endpoint`` is.

    See :func:`kombu_appengine.client.root_url_of`.
    """
    # Here, not at the top: the emulator's command needs none of the client.
    from .client import root_url_of

    try:
        root_url_of(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


#: ``type=`` for a kombu queue name.
queue_name = not_empty("a queue name")


#: ``type=`` for counts of one or more (processes, say).
positive_int = integer(1)
#: ``type=`` for counts that may be 0 (retries, say).
non_negative_int = integer(0)
#: ``type=`` for a TCP port; 0 asks for a free one.
port_number = integer(0, 65535)
#: ``type=`` for the address a server binds.
host_address = not_empty("an address", "0.0.0.0 listens on every address")


def project_id(value: str) -> str:
    """An argparse ``type=``: an application id, with or without ``s~`` or ``e~``.

    Raises:
        argparse.ArgumentTypeError: an empty or malformed id, which no
            request could name (the server would answer 404 to all).
    """
    if not PROJECT_ID_RE.match(bare_project(value)):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an application id: 1 to 100 of a-z, 0-9, '-', '.' and ':'"
        )
    return value


def add_listen_options(parser: argparse.ArgumentParser, default_port: int) -> None:
    """Add where a server listens: ``--host`` (default ``127.0.0.1``) and ``--port`` (0 picks a free one),
    checked before anything starts."""
    parser.add_argument(
        "--host", type=host_address, default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=default_port,
        help="port to bind; 0 picks a free one (default: %(default)s)",
    )


def printable(text: str) -> str:
    """``text`` as a terminal may show it: every character that does not print
    (a newline, the ESC of an ANSI sequence, a right-to-left override) written
    as its Python escape (``\\n``, ``\\x1b``, ``\\u202e``), and a backslash doubled.

    For what a command prints that came from elsewhere (a tag, a server's
    message): a newline in it cannot forge a line of the output, nor an
    escape sequence reach the terminal, and a backslash in it cannot pass for
    an escape.
    """
    return "".join(
        char if char.isprintable() and char != "\\" else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


class Server(Protocol):
    """A server a command runs in the foreground: the emulator's or the gateway's."""

    @property
    def url(self) -> str: ...

    def serve_forever(self) -> None: ...

    def stop(self) -> None: ...


def serve_until_stopped(server: Server) -> None:
    """Announce ``server``'s address on stdout, then serve until SIGINT or SIGTERM.

    The ``listening on URL`` line is what scripts and tests wait for; it is
    flushed at once.
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()

"""``pullqueue_emulator``: run the Task Queue REST API emulator."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from .. import cli_common
from ..cli_common import (
    add_listen_options,
    add_log_format_option,
    add_log_level_option,
    add_version_option,
    configure_logging,
    fail,
    not_empty,
    project_id,
    serve_until_stopped,
)
from .queue_yaml import QueueYamlError, queue_configs
from .server import DEFAULT_MAX_CONNECTIONS, IDLE_TIMEOUT, REQUEST_TIMEOUT, Emulator
from .storage import StorageError

#: ``type=`` of ``--max-connections``.
positive_int = cli_common.positive_int
#: ``type=`` of ``--request-timeout`` and ``--idle-timeout``.
positive_seconds = cli_common.number("seconds")
_milliseconds = cli_common.number("milliseconds", zero=True)

logger = logging.getLogger(__name__)


def milliseconds(value: str) -> float:
    """An argparse ``type=``: zero or a positive, finite number of milliseconds, as seconds.

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    return _milliseconds(value) / 1000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pullqueue_emulator",
        description="Serve the App Engine Task Queue REST API (v1beta2) for local development and tests.",
    )
    add_listen_options(parser, default_port=8123)
    parser.add_argument(
        "--queue", action="append", default=[], metavar="NAME", help="declare a pull queue (repeatable)"
    )
    parser.add_argument("--queue-yaml", metavar="PATH", help="read pull queues from an App Engine queue.yaml")
    parser.add_argument(
        "--project",
        type=project_id,
        metavar="ID",
        help="serve only this application id (with or without s~/e~); default: any",
    )
    parser.add_argument(
        "--data-dir",
        type=not_empty("a path"),
        metavar="PATH",
        help="keep tasks on disk here; default: memory only",
    )
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="sync every change to the disk before answering: it survives power loss, not only a crash"
        " of the emulator (slower; needs --data-dir)",
    )
    parser.add_argument(
        "--require-auth", action="store_true", help="answer 401 to requests without an OAuth bearer token"
    )
    parser.add_argument(
        "--max-connections",
        type=positive_int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="most connections served at once; at the cap the one idle longest is closed, or new ones"
        " wait (default: %(default)s)",
    )
    parser.add_argument(
        "--request-timeout",
        type=positive_seconds,
        default=REQUEST_TIMEOUT,
        metavar="SECS",
        help="seconds a request may take to arrive, from its first byte to the end of its body;"
        " slower ones are answered 408 (default: %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=positive_seconds,
        default=IDLE_TIMEOUT,
        metavar="SECS",
        help="seconds a keep-alive connection may wait for its next request (default: %(default)s)",
    )
    parser.add_argument(
        "--latency",
        type=milliseconds,
        default=0.0,
        metavar="MS",
        help="delay every answer by MS milliseconds, to test clients' timeouts; the request is carried"
        " out at once, and other connections are not held up (default: 0)",
    )
    add_log_level_option(parser, default="WARNING")
    add_log_format_option(parser)
    add_version_option(parser)
    return parser


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until SIGINT or SIGTERM."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.fsync and not args.data_dir:
        parser.error("--fsync needs --data-dir")
    configure_logging(args.log_level, args.log_format, "%(asctime)s %(levelname)s %(name)s: %(message)s")

    def notice(kind: str, text: str) -> None:
        # Shown whatever --log-level says; with --log-format json, as a JSON line like the rest.
        if args.log_format == "json":
            logger.log(max(logging.WARNING, logger.getEffectiveLevel()), "%s: %s", kind, text)
        else:
            print(f"pullqueue_emulator: {kind}: {text}", file=sys.stderr)

    try:
        configs = queue_configs(args.queue, args.queue_yaml)
    except (QueueYamlError, ValueError) as exc:
        fail("pullqueue_emulator", str(exc), args.log_format)
    push = [config.name for config in configs if config.mode != "pull"]
    if push:
        notice(
            "note",
            f"not serving push queues {', '.join(push)} "
            "(only queues with 'mode: pull' are served by the REST API)",
        )
    if not any(config.mode == "pull" for config in configs):
        notice(
            "warning",
            "no pull queue declared (use --queue or --queue-yaml); every request will be answered 404",
        )
    if not _is_loopback(args.host):
        notice(
            "warning",
            f"listening on {args.host}, not loopback: anyone who can reach it "
            "can read and change every queue",
        )
    try:
        server = Emulator(
            configs,
            project=args.project,
            data_dir=args.data_dir,
            fsync=args.fsync,
            host=args.host,
            port=args.port,
            require_auth=args.require_auth,
            max_connections=args.max_connections,
            request_timeout=args.request_timeout,
            idle_timeout=args.idle_timeout,
            latency=args.latency,
        )
    except (OSError, StorageError) as exc:
        fail("pullqueue_emulator", f"cannot start: {exc}", args.log_format)
    serve_until_stopped(server)


if __name__ == "__main__":
    main()

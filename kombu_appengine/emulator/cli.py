"""``pullqueue_emulator``: run the Task Queue REST API emulator."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys

from ..cli_common import add_log_level_option, add_version_option
from .model import QueueConfig
from .queue_yaml import QueueYamlError, load_queue_yaml
from .server import Emulator
from .storage import StorageError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pullqueue_emulator",
        description="Serve the App Engine Task Queue REST API (v1beta2) for local development and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8123, help="port to bind; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--queue", action="append", default=[], metavar="NAME", help="declare a pull queue (repeatable)"
    )
    parser.add_argument("--queue-yaml", metavar="PATH", help="read pull queues from an App Engine queue.yaml")
    parser.add_argument(
        "--project", metavar="ID", help="serve only this application id (with or without s~/e~); default: any"
    )
    parser.add_argument("--data-dir", metavar="PATH", help="keep tasks on disk here; default: memory only")
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="sync every change to the disk before answering: it survives power loss, not only a crash"
        " of the emulator (slower; needs --data-dir)",
    )
    parser.add_argument(
        "--require-auth", action="store_true", help="answer 401 to requests without an OAuth bearer token"
    )
    add_log_level_option(parser, default="WARNING")
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
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        configs = load_queue_yaml(args.queue_yaml) if args.queue_yaml else []
        configs += [QueueConfig(name) for name in args.queue]
    except (QueueYamlError, ValueError) as exc:
        sys.exit(f"pullqueue_emulator: {exc}")
    push = [config.name for config in configs if config.mode != "pull"]
    if push:
        print(
            f"pullqueue_emulator: note: not serving push queues {', '.join(push)} "
            "(only queues with 'mode: pull' are served by the REST API)",
            file=sys.stderr,
        )
    if not any(config.mode == "pull" for config in configs):
        print(
            "pullqueue_emulator: warning: no pull queue declared (use --queue or --queue-yaml); "
            "every request will be answered 404",
            file=sys.stderr,
        )
    if not _is_loopback(args.host):
        print(
            f"pullqueue_emulator: warning: listening on {args.host}, not loopback: anyone who can "
            "reach it can read and change every queue",
            file=sys.stderr,
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
        )
    except (OSError, StorageError) as exc:
        sys.exit(f"pullqueue_emulator: cannot start: {exc}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()

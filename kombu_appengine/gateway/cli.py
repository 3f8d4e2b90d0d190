"""``pullqueue_gateway``: the gateway here, on App Engine's task queue stub, or a deployment scaffolded."""

from __future__ import annotations

import argparse
import sys

from ..cli_common import (
    add_listen_options,
    add_log_format_option,
    add_log_level_option,
    add_version_option,
    configure_logging,
    fail,
    project_id,
    serve_until_stopped,
)
from ..emulator.queue_yaml import QueueYamlError, load_queue_yaml
from .auth import GOOGLE_TOKENINFO_URL, check_tokeninfo_url


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pullqueue_gateway",
        description="The Task Queue REST API (v1beta2) on App Engine's task queue service.",
    )
    add_version_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="serve the gateway here, on the App Engine SDK's task queue stub"
    )
    serve.add_argument("--queue-yaml", metavar="FILE", required=True, help="the application's queue.yaml")
    add_listen_options(serve, default_port=8124)
    serve.add_argument(
        "--project",
        type=project_id,
        metavar="ID",
        help="the application id (with or without s~/e~); other ids are 404 (default: any)",
    )
    serve.add_argument(
        "--require-auth", action="store_true", help="verify bearer tokens at the token-info endpoint"
    )
    serve.add_argument(
        "--tokeninfo-url",
        type=_tokeninfo_url,
        metavar="URL",
        help=f"token-info endpoint, with --require-auth (default: {GOOGLE_TOKENINFO_URL})",
    )
    serve.add_argument(
        "--allow-service-account",
        action="append",
        default=[],
        metavar="EMAIL",
        help="with --require-auth, an account allowed on every queue, whatever its acl (repeatable)",
    )
    add_log_level_option(serve, default="WARNING")
    add_log_format_option(serve)
    scaffold = commands.add_parser("scaffold", help="write a directory ready for gcloud app deploy")
    scaffold.add_argument("directory", metavar="DIR")
    scaffold.add_argument(
        "--service",
        type=_service_name,
        default="pullqueue-gateway",
        help="the App Engine service (default: %(default)s)",
    )
    return parser


def _service_name(value: str) -> str:
    from .scaffold import check_service_name

    try:
        return check_service_name(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _tokeninfo_url(value: str) -> str:
    try:
        return check_tokeninfo_url(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve" and not args.require_auth:
        # Without --require-auth they would be ignored: an open gateway the user believes guarded.
        given = [
            option
            for option, value in (
                ("--tokeninfo-url", args.tokeninfo_url),
                ("--allow-service-account", args.allow_service_account),
            )
            if value
        ]
        if given:
            needs = "need" if len(given) > 1 else "needs"
            parser.error(
                f"serve: {' and '.join(given)} {needs} --require-auth (without it, every caller is let in)"
            )
    if args.command == "scaffold":
        from .scaffold import ScaffoldError, scaffold

        try:
            written = scaffold(args.directory, args.service)
        except ScaffoldError as exc:
            sys.exit(f"pullqueue_gateway: {exc}")
        for path in written:
            print(f"wrote {path}")
        return
    _serve(args)


def _serve(args: argparse.Namespace) -> None:
    configure_logging(args.log_level, args.log_format, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        configs = load_queue_yaml(args.queue_yaml)
    except QueueYamlError as exc:
        fail("pullqueue_gateway", str(exc), args.log_format)
    from .auth import TokenInfoAuthenticator
    from .local import LocalGateway

    authenticator = None
    if args.require_auth:
        authenticator = TokenInfoAuthenticator(
            args.tokeninfo_url or GOOGLE_TOKENINFO_URL, args.allow_service_account
        )
    try:
        server = LocalGateway(
            configs, project=args.project, authenticator=authenticator, host=args.host, port=args.port
        )
    except OSError as exc:
        fail("pullqueue_gateway", f"cannot start: {exc}", args.log_format)
    serve_until_stopped(server)


if __name__ == "__main__":
    main()

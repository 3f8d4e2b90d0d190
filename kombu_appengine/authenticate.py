"""``pullqueue_authenticate client_secrets.json credentials``: get OAuth 2.0
credentials for the Task Queue API, as an installed application.

The user consents in a browser; the credentials (with a refresh token) are
written to ``credentials`` in oauth2client's storage format, which the
transport option ``credentials_file`` and ``oauth2client.file.Storage`` both
read. ``client_secrets.json`` is an OAuth client of type "Desktop app"
("installed"), downloaded from the Google Cloud console; its ``auth_uri``
and ``token_uri`` are the endpoints used.

Google retired the out-of-band flow (``urn:ietf:wg:oauth:2.0:oob``), so:

* by default, the browser is sent back to a one-shot server on
  ``http://127.0.0.1:PORT/`` (loopback, a free port), which receives the
  authorization code;
* with ``--noauth_local_webserver`` (a machine without a browser), the
  browser, wherever it runs, is sent back to ``http://localhost`` (the
  redirect URI Google registers for desktop clients); nothing listens
  there, so the browser shows an error page, and the user pastes the
  address from its address bar (or just the ``code`` in it) here.

The ``state`` parameter is checked (a pasted bare code carries none) and the
code is bound to this run with PKCE (RFC 7636, S256). Tokens and the client
secret are never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import http.server
import json
import os
import secrets
import sys
import threading
import urllib.parse
import webbrowser
from typing import Any, TextIO

import httplib2
import oauth2client
from oauth2client.client import FlowExchangeError, OAuth2Credentials, OAuth2WebServerFlow

from .api import TASKQUEUE_CONSUMER_SCOPE, TASKQUEUE_SCOPE, USERINFO_EMAIL_SCOPE
from .cli_common import add_version_option
from .credentials import (
    AnswerKeepingHttp,
    CredentialsFileStorage,
    check_replaceable,
    json_kind,
    token_error_text,
)

#: ``--scope`` short names.
SCOPES = {"taskqueue": TASKQUEUE_SCOPE, "consumer": TASKQUEUE_CONSUMER_SCOPE}
#: Where the browser is sent back with ``--noauth_local_webserver``.
MANUAL_REDIRECT_URI = "http://localhost"
#: Socket timeout, in seconds, of the code exchange.
EXCHANGE_TIMEOUT = 60.0


class AuthenticationError(Exception):
    """The flow cannot go on; the message is the one line the user sees."""


def _scope(value: str) -> str:
    if value in SCOPES:
        return SCOPES[value]
    if value in SCOPES.values():
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r} is not a Task Queue scope: use taskqueue, consumer or one of {', '.join(SCOPES.values())}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="pullqueue_authenticate",
        description="Authorize access to App Engine pull queues (OAuth 2.0 installed-application flow) "
        "and write the credentials file for the transport option credentials_file.",
    )
    parser.add_argument("client_secrets", help="client secrets JSON of a Desktop-app OAuth client")
    parser.add_argument("credentials", help="file to write the credentials to (mode 0600)")
    parser.add_argument(
        "--scope",
        type=_scope,
        default=TASKQUEUE_SCOPE,
        help="taskqueue (default: insert and consume) or consumer (consume only), or the scope's URL",
    )
    parser.add_argument(
        "--noauth_local_webserver",
        "--noauth-local-webserver",
        action="store_true",
        help="no local server: paste the address the browser was sent to "
        f"({MANUAL_REDIRECT_URI}/?code=...) or its code on standard input",
    )
    parser.add_argument(
        "--no-browser",
        "--no_browser",
        action="store_true",
        help="print the authorization URL without opening a browser",
    )
    add_version_option(parser)
    return parser.parse_args(argv)


def load_client_secrets(path: str) -> dict[str, Any]:
    """The ``installed`` client of a client secrets file.

    Raises:
        AuthenticationError: the file is missing or malformed, or is not an
            installed (Desktop app) client; one line that names the file.
    """
    try:
        with open(path, "rb") as file:
            document = json.loads(file.read())
    except OSError as error:
        raise AuthenticationError(f"client secrets file {path}: cannot read it: {error.strerror}") from None
    except (ValueError, RecursionError):
        raise AuthenticationError(f"client secrets file {path}: not JSON") from None
    if not isinstance(document, dict) or len(document) != 1:
        raise AuthenticationError(
            f"client secrets file {path}: not the JSON of an OAuth client: expected an object with one "
            'key, "installed", holding a Desktop app client from the Google Cloud console'
        )
    [(kind, info)] = document.items()
    if kind != "installed":
        raise AuthenticationError(
            f"client secrets file {path} is for a {kind!r} client, not 'installed': create an OAuth client "
            "of type 'Desktop app' (installed) in the Google Cloud console and download its JSON"
        )
    if not isinstance(info, dict):
        raise AuthenticationError(
            f'client secrets file {path}: "installed" must be an object, not {json_kind(info)}'
        )
    _check_client(path, info)
    return info


def _check_client(path: str, info: dict[str, Any]) -> None:
    """Refuse the field values oauth2client lets through (wrong types, empty, not URLs).

    The messages name the field and say what it holds by kind only: a value
    of this file may be its secret, and is never shown.
    """
    for key in ("client_id", "client_secret", "auth_uri", "token_uri"):
        value = info.get(key)
        if not isinstance(value, str) or not value.strip():
            held = "missing" if key not in info else f"not {json_kind(value)}"
            raise AuthenticationError(
                f'client secrets file {path}: "installed" must give {key} as a non-empty string, {held}'
            )
    for key in ("auth_uri", "token_uri"):
        parts = urllib.parse.urlsplit(info[key])
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AuthenticationError(
                f'client secrets file {path}: "installed" must give {key} as an http(s) URL, '
                "and it is not one"
            )
    uris = info.get("redirect_uris", [])
    if not isinstance(uris, list):
        raise AuthenticationError(
            f'client secrets file {path}: "installed" must give redirect_uris as a list of URLs, '
            f"not {json_kind(uris)}"
        )
    for uri in uris:
        if not isinstance(uri, str):
            raise AuthenticationError(
                f'client secrets file {path}: "installed" must give redirect_uris as a list of URLs, '
                f"and it holds {json_kind(uri)}"
            )


def open_browser(url: str) -> None:
    """Open ``url`` in a browser, if there is one, without waiting for it.

    A console browser (lynx, say) would hold the terminal, so it runs in a
    daemon thread that the flow never waits for.
    """

    def attempt() -> None:
        with contextlib.suppress(webbrowser.Error):
            webbrowser.open(url, new=1, autoraise=True)

    threading.Thread(target=attempt, name="open-browser", daemon=True).start()


def _check_redirect(params: dict[str, list[str]], state: str) -> str:
    """The code of an authorization response's parameters.

    Raises:
        AuthenticationError: consent was denied, the server answered another
            error, the ``state`` does not match, or there is no code.
    """
    error = params.get("error", [None])[0]
    if error == "access_denied":
        raise AuthenticationError("consent was denied in the browser (access_denied): no credentials written")
    if error:
        description = params.get("error_description", [""])[0]
        answer = {"error": error, "error_description": description}
        raise AuthenticationError(f"the authorization server refused: {token_error_text(answer)}")
    if not secrets.compare_digest(params.get("state", [""])[0].encode(), state.encode()):
        raise AuthenticationError(
            "the state parameter of the answer does not match this request: "
            "not the answer to this authorization, start again"
        )
    code = params.get("code", [""])[0]
    if not code:
        raise AuthenticationError("the answer carries no authorization code")
    return code


class _RedirectHandler(http.server.BaseHTTPRequestHandler):
    """Receives the browser's redirect on the loopback server."""

    server: _LoopbackServer
    #: Seconds an idle connection (a browser's speculative preconnect) is kept.
    timeout = 30

    def do_GET(self) -> None:
        query = urllib.parse.urlsplit(self.path).query
        params = urllib.parse.parse_qs(query)
        if "code" not in params and "error" not in params:
            self.send_error(404)
            return
        code: str | None = None
        error: AuthenticationError | None = None
        try:
            code = _check_redirect(params, self.server.state)
            title, text = (
                "Authorized",
                "pullqueue_authenticate got the authorization. You may close this window.",
            )
        except AuthenticationError as refusal:
            error = refusal
            title, text = "Not authorized", str(refusal)
        page = f"<!doctype html><title>{title}</title><p>{html.escape(text)}</p>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)
        self.wfile.flush()
        # Only now: the command may exit as soon as it has the answer.
        self.server.answer(code, error)

    def log_message(self, format: str, *args: object) -> None:
        # The request line holds the authorization code: keep it off the terminal.
        pass


class _LoopbackServer(http.server.ThreadingHTTPServer):
    """The one-shot server the browser is sent back to.

    Threaded, because browsers open idle speculative connections that a
    single-threaded server would wait on while the redirect queues behind.
    """

    daemon_threads = True

    def __init__(self, state: str) -> None:
        super().__init__(("127.0.0.1", 0), _RedirectHandler)
        self.state = state
        self.code: str | None = None
        self.error: AuthenticationError | None = None
        self.answered = threading.Event()
        self._answer_lock = threading.Lock()

    def answer(self, code: str | None = None, error: AuthenticationError | None = None) -> None:
        """Take the first answer; later ones (a reload) change nothing."""
        with self._answer_lock:
            if not self.answered.is_set():
                self.code, self.error = code, error
                self.answered.set()

    def wait_for_code(self) -> str:
        """Serve until the browser comes back; its code.

        Raises:
            AuthenticationError: it came back with an error or a wrong state.
        """
        serving = threading.Thread(target=self.serve_forever, name="loopback-redirect", daemon=True)
        serving.start()
        try:
            self.answered.wait()
        finally:
            self.shutdown()
            serving.join()
        if self.error is not None:
            raise self.error
        assert self.code is not None
        return self.code


def _code_from_paste(text: str, state: str) -> str:
    """The code in what was pasted: the redirected address, its query, or the code alone."""
    text = text.strip()
    if not text:
        raise AuthenticationError("no authorization code was given")
    if "=" in text:
        query = urllib.parse.urlsplit(text).query if "://" in text else text.lstrip("?")
        return _check_redirect(urllib.parse.parse_qs(query), state)
    if any(character.isspace() for character in text):
        raise AuthenticationError("that is neither the address the browser was sent to nor a code")
    return text


def obtain_credentials(
    info: dict[str, str], scope: str, manual: bool, browser: bool, stdin: TextIO, stdout: TextIO
) -> OAuth2Credentials:
    """Run the flow with the client ``info``; the credentials it yields.

    It asks for ``scope`` and :data:`~kombu_appengine.api.USERINFO_EMAIL_SCOPE`:
    without the latter, Google's token-info endpoint does not say whose token
    it is, and the gateway refuses it.

    Raises:
        AuthenticationError: the flow failed.
    """
    state = secrets.token_urlsafe(24)
    server = None if manual else _LoopbackServer(state)
    redirect_uri = MANUAL_REDIRECT_URI if server is None else f"http://127.0.0.1:{server.server_port}/"
    flow = OAuth2WebServerFlow(
        info["client_id"],
        client_secret=info.get("client_secret"),
        scope=[scope, USERINFO_EMAIL_SCOPE],
        redirect_uri=redirect_uri,
        auth_uri=info["auth_uri"],
        token_uri=info["token_uri"],
        revoke_uri=info.get("revoke_uri", oauth2client.GOOGLE_REVOKE_URI),
        user_agent="pullqueue_authenticate",
        pkce=True,
        prompt="consent",
    )
    url = flow.step1_get_authorize_url(state=state)
    try:
        print("Open this address in a browser and allow access to your pull queues:", file=stdout)
        print(url, file=stdout)
        if server is None:
            print(
                f"The browser is then sent to {MANUAL_REDIRECT_URI}, which shows an error page: "
                "paste the address from its address bar here (or only the code in it).",
                file=stdout,
            )
            print("Address or code: ", end="", file=stdout)
            stdout.flush()
            answer = stdin.readline()
            if not answer.endswith("\n"):
                print(file=stdout)  # end the prompt's line at end of input
            code = _code_from_paste(answer, state)
        else:
            print("Waiting for the browser to come back to " + redirect_uri, file=stdout)
            stdout.flush()
            if browser:
                open_browser(url)
            code = server.wait_for_code()
    finally:
        if server is not None:
            server.server_close()
    http = AnswerKeepingHttp(timeout=EXCHANGE_TIMEOUT)
    try:
        return flow.step2_exchange(code, http=http)
    except FlowExchangeError as error:
        raise AuthenticationError(
            f"the token endpoint {info['token_uri']} refused the authorization code: "
            + token_error_text(http.last_content or str(error))
        ) from None
    except (httplib2.HttpLib2Error, OSError) as error:
        raise AuthenticationError(f"cannot reach the token endpoint {info['token_uri']}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    """The ``pullqueue_authenticate`` command; returns its exit status."""
    args = parse_args(argv)
    path = os.path.abspath(args.credentials)
    try:
        info = load_client_secrets(args.client_secrets)
        try:
            # Before the consent: a user must not consent for credentials that cannot be written.
            check_replaceable(path)
        except OSError as error:
            raise AuthenticationError(f"cannot write the credentials file {path}: {error.strerror}") from None
        credentials = obtain_credentials(
            info, args.scope, args.noauth_local_webserver, not args.no_browser, sys.stdin, sys.stdout
        )
        if not credentials.refresh_token:
            print(
                "pullqueue_authenticate: warning: the authorization server gave no refresh token; "
                "these credentials stop working when the access token expires",
                file=sys.stderr,
            )
        try:
            CredentialsFileStorage(path).put(credentials)
        except OSError as error:
            raise AuthenticationError(f"cannot write the credentials file {path}: {error.strerror}") from None
    except AuthenticationError as error:
        print(f"pullqueue_authenticate: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pullqueue_authenticate: interrupted: no credentials written", file=sys.stderr)
        return 130
    print(f"Credentials written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

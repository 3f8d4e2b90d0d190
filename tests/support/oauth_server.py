"""A small, real OAuth 2.0 authorization server on 127.0.0.1, for tests.

Google's servers cannot be reached from the tests, so this one stands in,
speaking the same protocol over real sockets:

* authorization endpoint ``/auth`` (RFC 6749 4.1.1): checks the client and
  its loopback ``redirect_uri`` (RFC 8252 7.3: any port), requires PKCE with
  S256 (RFC 7636), and redirects with ``code`` and ``state``, or with
  ``error=access_denied`` when :attr:`OAuthServer.deny` is set;
* token endpoint ``/token``: ``authorization_code`` (one use, redirect URI
  and ``code_verifier`` checked), ``refresh_token``, and the service-account
  JWT bearer grant (RFC 7523, RS256 signatures checked with ``cryptography``);
* token-info endpoint ``/tokeninfo?access_token=...``, as Google's
  (``https://oauth2.googleapis.com/tokeninfo``): a valid token's ``scope``
  and ``expires_in``, and its ``email`` only when the token carries an email
  scope (:data:`EMAIL_SCOPES`), as Google's; else 400 ``invalid_token``. A
  user's tokens carry :attr:`OAuthServer.user_email`, a service account's
  its ``client_email``.

Every access token it issues is distinct, and :attr:`OAuthServer.valid_tokens`
is the live set of those not yet expired: give it to an emulator as its
``accepted_tokens``, and :meth:`OAuthServer.expire` makes the emulator refuse
a token (401) the moment the server considers it expired.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import json
import queue
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httplib2

#: Grant type of the service-account JWT bearer flow (RFC 7523).
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The audience google-auth writes into every service-account assertion,
#: whatever the key's token_uri (Google's endpoint accepts it too).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
#: Scopes that make Google's token-info endpoint report a token's email.
EMAIL_SCOPES = frozenset({"https://www.googleapis.com/auth/userinfo.email", "email"})
#: What pullqueue_authenticate asks for by default, and what tests' tokens carry.
CLIENT_SCOPE = "https://www.googleapis.com/auth/taskqueue https://www.googleapis.com/auth/userinfo.email"
#: Host names a native app's redirect may use (RFC 8252 7.3).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
#: Seconds a step of pullqueue_authenticate (printing, exiting) may take.
STEP_DEADLINE = 30.0
#: Characters a PKCE code verifier may hold (RFC 7636 4.1).
VERIFIER_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def s256(verifier: str) -> str:
    """The S256 code challenge of ``verifier`` (RFC 7636 4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


@dataclass
class Grant:
    """An authorization code, waiting to be exchanged."""

    client_id: str
    redirect_uri: str
    scope: str
    challenge: str


class OAuthError(Exception):
    """An error answer of the token endpoint (RFC 6749 5.2)."""

    def __init__(self, error: str, description: str = "", status: int = 400) -> None:
        super().__init__(error)
        self.error, self.description, self.status = error, description, status


class OAuthServer:
    """The server, run in a background thread; use it as a context manager.

    Parameters:
        expires_in: lifetime, in seconds, announced for each access token.
    """

    def __init__(self, expires_in: int = 3600) -> None:
        self.expires_in = expires_in
        #: The one client: an installed application.
        self.client_id = "test-client.apps.example.com"
        self.client_secret = "client-secret-" + secrets.token_urlsafe(8)
        #: When true, the authorization endpoint answers ``access_denied``.
        self.deny = False
        #: When set, the ``error_description`` of every error the token endpoint answers.
        self.error_description: str | None = None
        #: The email the token-info endpoint gives for a user's tokens.
        self.user_email = "user@example.com"
        #: Token-info requests answered, in order (valid or not).
        self.tokeninfo_requests = 0
        #: What the next token-info requests are answered, in order (see :meth:`answer_tokeninfo_with`).
        self._tokeninfo_answers: list[tuple[int, Any]] = []
        self._token_emails: dict[str, tuple[str, str]] = {}
        #: Access tokens not expired: hand this set to an emulator.
        self.valid_tokens: set[str] = set()
        #: Every access token issued, in order.
        self.issued: list[str] = []
        #: Every refresh token issued, in order.
        self.refresh_tokens_issued: list[str] = []
        #: Query parameters of every authorization request, in order.
        self.authorization_requests: list[dict[str, str]] = []
        #: ``grant_type`` of every token request that succeeded, in order.
        self.grants: list[str] = []
        #: Statuses the next token requests are answered with, in order (see :meth:`fail_next`).
        self._failures: list[int] = []
        self._codes: dict[str, Grant] = {}
        self._refresh_tokens: dict[str, str] = {}
        self._service_accounts: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.oauth = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> OAuthServer:
        # shutdown() waits up to one poll interval: keep it short, as most
        # credential tests start and stop a server of their own.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="oauth-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def auth_uri(self) -> str:
        """The authorization endpoint."""
        return self.url + "/auth"

    @property
    def token_uri(self) -> str:
        """The token endpoint."""
        return self.url + "/token"

    # -- what tests set up ----------------------------------------------------

    def client_secrets(self, kind: str = "installed") -> dict[str, Any]:
        """A client secrets document, as the Google Cloud console downloads it."""
        return {
            kind: {
                "client_id": self.client_id,
                "project_id": "test-project",
                "auth_uri": self.auth_uri,
                "token_uri": self.token_uri,
                "client_secret": self.client_secret,
                "redirect_uris": ["http://localhost"],
            }
        }

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next ``count`` token requests with ``status`` (``temporarily_unavailable``)."""
        with self._lock:
            self._failures.extend([status] * count)

    def answer_tokeninfo_with(self, status: int, document: Any, count: int = 1) -> None:
        """Answer the next ``count`` token-info requests with ``status`` and the JSON ``document``."""
        with self._lock:
            self._tokeninfo_answers.extend([(status, document)] * count)

    def expire(self, token: str) -> None:
        """From now on, ``token`` is expired: the emulator refuses it."""
        self.valid_tokens.discard(token)

    def revoke_refresh_token(self, refresh_token: str) -> None:
        """From now on, ``refresh_token`` is refused (``invalid_grant``)."""
        with self._lock:
            self._refresh_tokens.pop(refresh_token, None)

    def access_token_for(self, email: str, scope: str = CLIENT_SCOPE) -> str:
        """An access token (no refresh token) the token-info endpoint gives as ``email``'s, for ``scope``."""
        with self._lock:
            return str(self._issue(self.client_id, scope, refresh=False, email=email)["access_token"])

    def issue_user_tokens(self) -> dict[str, Any]:
        """A token response for the client, as after the user's consent (no browser)."""
        with self._lock:
            answer = self._issue(self.client_id, CLIENT_SCOPE, refresh=True, email=self.user_email)
        return answer

    def write_credentials_file(self, path: Any) -> Any:
        """Write what pullqueue_authenticate writes after consent, without the browser round."""
        from oauth2client.client import OAuth2Credentials

        from kombu_appengine.credentials import CredentialsFileStorage

        answer = self.issue_user_tokens()
        expiry = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(
            seconds=answer["expires_in"]
        )
        CredentialsFileStorage(str(path)).put(
            OAuth2Credentials(
                answer["access_token"],
                self.client_id,
                self.client_secret,
                answer["refresh_token"],
                expiry,
                self.token_uri,
                "pullqueue_authenticate",
                scopes=CLIENT_SCOPE,
            )
        )
        return path

    def authorized_user_info(self, with_token: bool = False) -> dict[str, Any]:
        """An authorized-user file's content whose ``token_uri`` is this server."""
        answer = self.issue_user_tokens()
        info = {
            "type": "authorized_user",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": answer["refresh_token"],
            "token_uri": self.token_uri,
        }
        if with_token:
            info["token"] = answer["access_token"]
            expiry = time.gmtime(time.time() + answer["expires_in"])
            info["expiry"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", expiry)
        return info

    def service_account_info(
        self, email: str = "worker@test-project.iam.gserviceaccount.com"
    ) -> dict[str, Any]:
        """A new service-account key file's content, its public key known to this server.

        Raises:
            ImportError: the ``cryptography`` package is not installed.
        """
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = secrets.token_hex(8)
        with self._lock:
            self._service_accounts[email] = key.public_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")
        return {
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": "1234567890",
            "auth_uri": self.auth_uri,
            "token_uri": self.token_uri,
        }

    # -- the endpoints --------------------------------------------------------

    def authorize(self, params: dict[str, str]) -> tuple[int, dict[str, str], str]:
        """The authorization endpoint: (status, headers, body)."""
        self.authorization_requests.append(dict(params))
        redirect_uri = params.get("redirect_uri", "")
        parts = urllib.parse.urlsplit(redirect_uri)
        if params.get("client_id") != self.client_id:
            return 400, {}, "unknown client_id"
        if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
            return 400, {}, "redirect_uri must be a loopback http address"

        def redirect(answer: dict[str, str]) -> tuple[int, dict[str, str], str]:
            if "state" in params:
                answer["state"] = params["state"]
            query = urllib.parse.urlencode(answer)
            joined = urllib.parse.urlunsplit(
                parts._replace(query=(parts.query + "&" if parts.query else "") + query)
            )
            return 302, {"Location": joined}, ""

        if params.get("response_type") != "code":
            return redirect({"error": "unsupported_response_type"})
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return redirect({"error": "invalid_request", "error_description": "PKCE with S256 is required"})
        if self.deny:
            return redirect({"error": "access_denied"})
        code = secrets.token_urlsafe(16)
        with self._lock:
            self._codes[code] = Grant(
                self.client_id, redirect_uri, params.get("scope", ""), params["code_challenge"]
            )
        return redirect({"code": code, "scope": params.get("scope", "")})

    def token(self, form: dict[str, str], basic: tuple[str, str] | None) -> dict[str, Any]:
        """The token endpoint: the answer, or :class:`OAuthError`."""
        grant_type = form.get("grant_type")
        with self._lock:
            if self._failures:
                raise OAuthError("temporarily_unavailable", "try again later", self._failures.pop(0))
            if grant_type == JWT_BEARER:
                answer = self._jwt_grant(form.get("assertion", ""))
            else:
                client_id, client_secret = basic or (form.get("client_id"), form.get("client_secret"))
                if client_id != self.client_id or client_secret != self.client_secret:
                    raise OAuthError("invalid_client", "unknown client or wrong secret", 401)
                if grant_type == "authorization_code":
                    answer = self._code_grant(form)
                elif grant_type == "refresh_token":
                    answer = self._refresh_grant(form)
                else:
                    raise OAuthError("unsupported_grant_type")
            self.grants.append(grant_type)
        return answer

    @property
    def tokeninfo_uri(self) -> str:
        """The token-info endpoint, as Google's ``https://oauth2.googleapis.com/tokeninfo``."""
        return self.url + "/tokeninfo"

    def tokeninfo(self, token: str) -> tuple[int, Any]:
        """What Google's token-info endpoint answers for an access token."""
        with self._lock:
            self.tokeninfo_requests += 1
            if self._tokeninfo_answers:
                return self._tokeninfo_answers.pop(0)
        if token not in self.valid_tokens:
            return 400, {"error": "invalid_token", "error_description": "Invalid Value"}
        email, scope = self._token_emails[token]
        answer = {
            "azp": self.client_id,
            "aud": self.client_id,
            "scope": scope,
            "expires_in": str(self.expires_in),
            "access_type": "offline",
        }
        if EMAIL_SCOPES & set(scope.split()):
            answer.update(email=email, email_verified="true")
        return 200, answer

    def _code_grant(self, form: dict[str, str]) -> dict[str, Any]:
        grant = self._codes.pop(form.get("code", ""), None)
        if grant is None:
            raise OAuthError("invalid_grant", "unknown or already used code")
        if form.get("redirect_uri") != grant.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request's")
        verifier = form.get("code_verifier", "")
        if not 43 <= len(verifier) <= 128 or not set(verifier) <= VERIFIER_ALPHABET:
            raise OAuthError("invalid_grant", "missing or malformed code_verifier")
        if not secrets.compare_digest(s256(verifier), grant.challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        return self._issue(grant.client_id, grant.scope, refresh=True, email=self.user_email)

    def _refresh_grant(self, form: dict[str, str]) -> dict[str, Any]:
        scope = self._refresh_tokens.get(form.get("refresh_token", ""))
        if scope is None:
            raise OAuthError("invalid_grant", "Token has been expired or revoked.")
        return self._issue(self.client_id, scope, refresh=False, email=self.user_email)

    def _jwt_grant(self, assertion: str) -> dict[str, Any]:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            header_b64, claims_b64, signature_b64 = assertion.split(".")
            header = json.loads(_b64url_decode(header_b64))
            claims = json.loads(_b64url_decode(claims_b64))
            signature = _b64url_decode(signature_b64)
        except ValueError:
            raise OAuthError("invalid_grant", "malformed assertion") from None
        public_key = self._service_accounts.get(claims.get("iss"))
        if public_key is None or header.get("alg") != "RS256":
            raise OAuthError("invalid_grant", "unknown issuer or algorithm")
        try:
            public_key.verify(
                signature, f"{header_b64}.{claims_b64}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            raise OAuthError("invalid_grant", "bad signature") from None
        now = time.time()
        if claims.get("aud") not in (self.token_uri, GOOGLE_TOKEN_AUDIENCE):
            raise OAuthError("invalid_grant", "wrong audience")
        if claims.get("exp", 0) < now or claims.get("iat", now) > now + 60:
            raise OAuthError("invalid_grant", "outside the assertion's lifetime")
        return self._issue(claims["iss"], claims.get("scope", ""), refresh=False, email=claims["iss"])

    def _issue(self, client_id: str, scope: str, refresh: bool, email: str) -> dict[str, Any]:
        access_token = f"ya29.test-{len(self.issued) + 1}-{secrets.token_urlsafe(12)}"
        self.issued.append(access_token)
        self.valid_tokens.add(access_token)
        self._token_emails[access_token] = (email, scope)
        answer: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": scope,
        }
        if refresh:
            refresh_token = "1//test-refresh-" + secrets.token_urlsafe(16)
            self._refresh_tokens[refresh_token] = scope
            self.refresh_tokens_issued.append(refresh_token)
            answer["refresh_token"] = refresh_token
        return answer


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        if parts.path == "/tokeninfo":
            params = {key: values[0] for key, values in urllib.parse.parse_qs(parts.query).items()}
            status, answer = self.server.oauth.tokeninfo(params.get("access_token", ""))
            self._answer(status, {"Content-Type": "application/json"}, json.dumps(answer).encode())
            return
        if parts.path != "/auth":
            self._answer(404, {}, b"not found")
            return
        params = {key: values[0] for key, values in urllib.parse.parse_qs(parts.query).items()}
        status, headers, body = self.server.oauth.authorize(params)
        self._answer(status, headers, body.encode())

    def do_POST(self) -> None:
        if urllib.parse.urlsplit(self.path).path != "/token":
            self._answer(404, {}, b"not found")
            return
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length).decode("utf-8")
        form = {key: values[0] for key, values in urllib.parse.parse_qs(body).items()}
        basic = None
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            basic = (urllib.parse.unquote(user), urllib.parse.unquote(password))
        try:
            answer, status = self.server.oauth.token(form, basic), 200
        except OAuthError as error:
            description = self.server.oauth.error_description
            answer = {"error": error.error, "error_description": description or error.description}
            status = error.status
        payload = json.dumps(answer).encode()
        self._answer(status, {"Content-Type": "application/json", "Cache-Control": "no-store"}, payload)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# -- a browser, and pullqueue_authenticate in a child process -------------------


def visit(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` as a browser's address bar does, without following redirects."""
    browser = httplib2.Http(timeout=STEP_DEADLINE, proxy_info=None)
    browser.follow_redirects = False
    response, content = browser.request(url, "GET")
    return response.status, dict(response), content


def consent(authorization_url: str) -> str:
    """Open the authorization URL and consent: the address the browser is sent back to."""
    status, headers, content = visit(authorization_url)
    assert status == 302, (status, content)
    return headers["location"]


class AuthenticateRun:
    """``pullqueue_authenticate`` in a child process, its standard output read line by line."""

    def __init__(self, *args: str, command: list[str] | None = None) -> None:
        command = command or [sys.executable, "-m", "kombu_appengine.authenticate"]
        self.process = subprocess.Popen(
            command + list(args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        #: Standard output so far.
        self.stdout = ""
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def authorization_url(self) -> str:
        """The URL it prints for the browser."""
        while True:
            line = self._lines.get(timeout=STEP_DEADLINE)
            if line is None:
                status, _, stderr = self.finish()
                raise AssertionError(
                    f"pullqueue_authenticate exited ({status}) before printing a URL: {stderr}"
                )
            self.stdout += line
            if line.startswith("http"):
                return line.strip()

    def finish(self, answer: str | None = None) -> tuple[int, str, str]:
        """Type ``answer`` on its standard input, then wait: (exit status, stdout, stderr)."""
        assert self.process.stdin is not None
        assert self.process.stderr is not None
        if answer is not None:
            self.process.stdin.write(answer + "\n")
        self.process.stdin.close()
        status = self.process.wait(timeout=STEP_DEADLINE)
        while True:
            line = self._lines.get(timeout=STEP_DEADLINE)
            if line is None:
                break
            self.stdout += line
        return status, self.stdout, self.process.stderr.read()

"""Where the transport's OAuth 2.0 credentials come from, how they sign
requests, and where refreshed tokens go.

Sources, first match wins:

1. ``credentials``: a ready credentials object, google-auth or oauth2client.
2. ``credentials_storage``: anything with ``.get()``, such as
   ``oauth2client.file.Storage``.
3. ``credentials_file``: its kind is detected from its content: the file
   ``pullqueue_authenticate`` writes (oauth2client's storage format), a
   service-account key, or an authorized-user file (as gcloud or google-auth
   write it). A file of any other kind (an external account of workload
   identity federation, an impersonated service account...) is handed to
   google-auth's own loader, :func:`google.auth.load_credentials_from_file`.
4. (an emulator needs none: :class:`kombu_appengine.transport.Transport`
   decides that)
5. Application Default Credentials, with the Task Queue and email scopes
   (:data:`~kombu_appengine.api.CLIENT_SCOPES`; the gateway needs the email): the file
   named by ``GOOGLE_APPLICATION_CREDENTIALS`` (read as a ``credentials_file``
   when it is of a kind above), else whatever :func:`google.auth.default`
   finds.

Every source ends up as one google-auth credentials object. An access token
that has expired (or is about to) is refreshed before a request is sent, and
a token the service refuses (401) is refreshed once and the request retried.
The refreshed token is written back where it came from, so the next start
does not refresh again: through the oauth2client storage the credentials were
read from, or into the authorized-user file, keeping its other fields.
Service-account keys hold no token, so nothing is written for them, nor
for the kinds google-auth loads (their tokens are exchanged afresh).
Files are always written atomically (a temporary file renamed over the old
one), so a process never reads half a file another one is writing.

No function here logs or formats a token, a refresh token or a client
secret.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import stat
import tempfile
import threading
import warnings
from typing import Any

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport
import google_auth_httplib2
import httplib2
import oauth2client.client
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from .api import CLIENT_SCOPES
from .errors import AuthenticationFailed, ConfigurationError, TaskQueueConnectionError, TaskQueueError

logger = logging.getLogger(__name__)

#: Environment variable naming the Application Default Credentials file.
ADC_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
#: Socket timeout, in seconds, of a request to a token endpoint.
REFRESH_TIMEOUT = 60.0
#: Mode of a credentials file this module creates: readable by its owner only.
PRIVATE_FILE_MODE = 0o600
#: Least time a token written by another process must have left to be used
#: instead of refreshing (more than google-auth's own refresh margin).
FRESH_MARGIN = datetime.timedelta(minutes=5)
#: The ``type`` of a service-account key file.
SERVICE_ACCOUNT_TYPE = "service_account"
#: The ``type`` of an authorized-user file.
AUTHORIZED_USER_TYPE = "authorized_user"
#: Largest credentials file read: they hold a few KB; anything larger (a
#: symlink to /dev/zero, a log named by mistake) is refused unread.
MAX_CREDENTIALS_FILE_BYTES = 1024 * 1024
#: Most characters of a token endpoint's error answer that a message carries:
#: the answer is the server's to choose, and may be of any length.
MAX_ERROR_TEXT = 200
#: Largest token endpoint answer read as an error document.
MAX_ERROR_DOCUMENT = 1024 * 1024


# -- loading ----------------------------------------------------------------


def load_credentials(
    credentials: Any = None,
    storage: Any = None,
    credentials_file: str | None = None,
) -> google.auth.credentials.Credentials:
    """The credentials to sign requests with, from the first source given.

    With no source given, Application Default Credentials.

    Raises:
        ConfigurationError: a source is given but holds no usable
            credentials, or none is given and there are no Application
            Default Credentials; the message names the source.
    """
    if credentials is not None:
        return as_google_auth(credentials)
    if storage is not None:
        return as_google_auth(credentials_from_storage(storage))
    if credentials_file is not None:
        return credentials_from_file(credentials_file)
    return application_default_credentials()


def credentials_from_storage(storage: Any) -> Any:
    """The credentials ``storage.get()`` returns, set to write refreshes back to it.

    Raises:
        ConfigurationError: ``storage`` has no ``get()`` or holds nothing.
    """
    if not callable(getattr(storage, "get", None)):
        raise ConfigurationError(
            "credentials_storage must have a get() method, like oauth2client.file.Storage"
        )
    loaded = storage.get()
    if loaded is None:
        raise ConfigurationError(
            f"credentials_storage {type(storage).__name__} holds no credentials: "
            "run pullqueue_authenticate client_secrets.json FILE first"
        )
    if (
        isinstance(loaded, oauth2client.client.Credentials)
        and isinstance(storage, oauth2client.client.Storage)
        and getattr(loaded, "store", None) is None
    ):
        loaded.set_store(storage)
    return loaded


def credentials_from_file(path: str, source: str = "credentials_file") -> google.auth.credentials.Credentials:
    """Credentials from a file, whatever its kind.

    The file ``pullqueue_authenticate`` writes, service-account keys and
    authorized-user files are read here (so refreshed tokens go back to the
    file); any other kind is left to :func:`credentials_from_google_auth_file`.

    Parameters:
        path: the file.
        source: what named the file, for error messages.

    Raises:
        ConfigurationError: the file is missing, not JSON, or of a kind
            neither this module nor google-auth can load.
    """
    data = _read_json(path, source)
    if "_module" in data and "_class" in data:
        return as_google_auth(_oauth2client_credentials(data, path, source))
    kind = data.get("type")
    try:
        if kind == SERVICE_ACCOUNT_TYPE:
            return service_account.Credentials.from_service_account_info(data, scopes=list(CLIENT_SCOPES))
        if kind == AUTHORIZED_USER_TYPE:
            return AuthorizedUserFileCredentials.from_file_info(data, path)
    except (ValueError, KeyError) as error:
        raise ConfigurationError(f"{source} {path}: not a valid {kind} file: {error}") from None
    return credentials_from_google_auth_file(path, source)


def _oauth2client_credentials(data: dict[str, Any], path: str, source: str) -> Any:
    """The oauth2client credentials of a file in its storage format, set to write refreshes back to it.

    Raises:
        ConfigurationError: oauth2client cannot read them; naming the field
            missing, if that is why.
    """
    try:
        loaded = oauth2client.client.Credentials.new_from_json(json.dumps(data))
    except KeyError as error:
        raise ConfigurationError(
            f"{source} {path}: oauth2client cannot read it: it has no {error.args[0]!r}"
        ) from None
    except (ValueError, TypeError, AttributeError, ImportError) as error:
        # Not the message: it may quote a value of the file.
        raise ConfigurationError(
            f"{source} {path}: oauth2client cannot read it ({type(error).__name__})"
        ) from None
    loaded.set_store(CredentialsFileStorage(path))
    return loaded


def credentials_from_google_auth_file(
    path: str, source: str = "credentials_file"
) -> google.auth.credentials.Credentials:
    """Credentials from a file of a kind google-auth loads, with the Task Queue and email scopes.

    External accounts (workload identity federation, ``"type":
    "external_account"``), impersonated service accounts, and whatever else
    :func:`google.auth.load_credentials_from_file` knows.

    Parameters:
        path: the file.
        source: what named the file, for error messages.

    Raises:
        ConfigurationError: google-auth cannot load it either, or its
            credential source names a file or URL by something not a string.
    """
    data = _read_json(path, source)
    _check_credential_source(data, path, source)
    try:
        # Without scopes: given them, google-auth looks an external account's
        # project id up at once (a token exchange and a call to Cloud Resource
        # Manager), which the transport has no use for. as_google_auth scopes it.
        with warnings.catch_warnings():
            # google-auth warns against loading configurations from external
            # sources; this file is named by the user's own transport options.
            warnings.filterwarnings("ignore", "The load_credentials_from_file method is deprecated")
            loaded, _ = google.auth.load_credentials_from_file(path)
    # A malformed file of a known kind can also fail with a bare KeyError,
    # TypeError or AttributeError inside google-auth.
    except (google.auth.exceptions.GoogleAuthError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigurationError(
            f"{source} {path}: not a file written by pullqueue_authenticate, a service-account key "
            f"or an authorized-user file, and google-auth cannot load it either ({_one_line(error)})"
        ) from None
    return GoogleAuthFileCredentials(as_google_auth(loaded), path, source, data.get("token_url"))


def _check_credential_source(data: dict[str, Any], path: str, source: str) -> None:
    """Refuse a ``credential_source`` whose ``file`` or ``url`` is not a string.

    google-auth takes ``{"file": 5}`` as the process's file descriptor 5: it
    would read, then close, whatever that is.

    Raises:
        ConfigurationError: naming the file and the field.
    """
    credential_source = data.get("credential_source")
    if not isinstance(credential_source, dict):
        return
    for key, what in (("file", "a path"), ("url", "a URL")):
        value = credential_source.get(key)
        if value is not None and not (isinstance(value, str) and value):
            raise ConfigurationError(
                f'{source} {path}: its credential source must give "{key}" as {what}, not {json_kind(value)}'
            )


def json_kind(value: Any) -> str:
    """What kind of JSON value ``value`` is ("a list", "an empty string"...), never the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string" if value.strip() else "an empty string"
    return "a list" if isinstance(value, list) else "an object"


def _one_line(error: BaseException) -> str:
    """``error`` and what caused it, on one line.

    google-auth's errors keep their cause in ``args[1]`` or in
    ``__cause__``/``__context__``; ``str()`` of one would show a tuple.
    """
    parts = [f"{type(error).__name__}: {error.args[0] if error.args else ''}"]
    cause = error.__cause__ or error.__context__
    if cause is not None and str(cause) not in parts[0]:
        parts.append(str(cause))
    return " ".join(": ".join(parts).split())


def application_default_credentials() -> google.auth.credentials.Credentials:
    """Application Default Credentials with the Task Queue and email scopes.

    A ``GOOGLE_APPLICATION_CREDENTIALS`` file of a kind
    :func:`credentials_from_file` knows is read by it (so refreshed tokens
    are written back to it); anything else is left to
    :func:`google.auth.default`.

    Raises:
        ConfigurationError: there are none.
    """
    path = os.environ.get(ADC_ENV)
    if path:
        data = _read_json(path, ADC_ENV)
        if data.get("type") in (SERVICE_ACCOUNT_TYPE, AUTHORIZED_USER_TYPE):
            return credentials_from_file(path, source=ADC_ENV)
    try:
        found, _ = google.auth.default(scopes=list(CLIENT_SCOPES))
    except google.auth.exceptions.DefaultCredentialsError as error:
        raise ConfigurationError(
            "no credentials: set the transport option credentials_file (see "
            "pullqueue_authenticate), credentials_storage or credentials, or set up "
            f"Application Default Credentials ({error})"
        ) from None
    return found


def as_google_auth(credentials: Any) -> google.auth.credentials.Credentials:
    """``credentials`` as a google-auth object, with the Task Queue and email scopes if it needs scopes.

    oauth2client credentials are wrapped, not converted, so that refreshing
    them still goes through (and writes back to) their own storage.
    """
    if isinstance(credentials, google.auth.credentials.Credentials):
        return google.auth.credentials.with_scopes_if_required(credentials, list(CLIENT_SCOPES))
    if isinstance(credentials, oauth2client.client.Credentials):
        if getattr(credentials, "create_scoped_required", lambda: False)():
            credentials = credentials.create_scoped(list(CLIENT_SCOPES))
        return OAuth2ClientCredentials(credentials)
    raise ConfigurationError(
        f"credentials must be google-auth or oauth2client credentials, not {type(credentials).__name__}"
    )


def read_credentials_file(path: str) -> bytes:
    """The content of the credentials file at ``path``, read with care.

    A FIFO, a device or a directory is refused without waiting on it or
    reading it (a symlink to ``/dev/zero`` would never end), and so is a
    file larger than :data:`MAX_CREDENTIALS_FILE_BYTES`: at most one byte
    more than that is read.

    Raises:
        OSError: it cannot be opened, is not a regular file or is too
            large; ``strerror`` says which.
    """
    # Non-blocking, so that opening a FIFO does not wait for a writer.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file")
        stream = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with stream:
        content = stream.read(MAX_CREDENTIALS_FILE_BYTES + 1)
    if len(content) > MAX_CREDENTIALS_FILE_BYTES:
        raise OSError(errno.EFBIG, "it is larger than 1 MiB, far more than any credentials file holds")
    return content


def _read_json(path: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(read_credentials_file(path))
    except OSError as error:
        raise ConfigurationError(f"{source} {path}: cannot read it: {error.strerror}") from None
    except (ValueError, RecursionError):
        raise ConfigurationError(f"{source} {path}: not a JSON credentials file") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{source} {path}: not a JSON credentials file")
    return data


# -- signing requests ---------------------------------------------------------


def token_error_text(answer: Any) -> str:
    """What a token endpoint's error answer says, on one line of at most :data:`MAX_ERROR_TEXT` characters.

    An RFC 6749 error document (``{"error": ..., "error_description": ...}``,
    as bytes, text or parsed) reads ``error (description)``; anything else
    is its text. Characters that are not printable (line breaks, a
    terminal's escape sequences) become spaces.
    """
    if isinstance(answer, (bytes, bytearray)):
        answer = bytes(answer).decode("utf-8", "replace")
    # A document longer than any error answer is no error document: not parsed.
    if isinstance(answer, str) and len(answer) <= MAX_ERROR_DOCUMENT:
        with contextlib.suppress(ValueError, RecursionError):
            answer = json.loads(answer)
    if isinstance(answer, dict) and "error" in answer:
        text = str(answer["error"])
        if answer.get("error_description"):
            text += f" ({answer['error_description']})"
    else:
        text = str(answer)
    text = " ".join("".join(c if c.isprintable() else " " for c in text[: 4 * MAX_ERROR_TEXT]).split())
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


class AnswerKeepingHttp(httplib2.Http):
    """An ``httplib2.Http`` that keeps the body of its last answer (:attr:`last_content`).

    oauth2client turns a token endpoint's refusal into a message of its
    own, running ``error`` and ``error_description`` together with no length
    limit; with the body kept, :func:`token_error_text` can say it properly.
    """

    #: The body of the last answer, if any.
    last_content: bytes | None = None

    def request(self, *args: Any, **kwargs: Any) -> Any:
        response, content = super().request(*args, **kwargs)
        self.last_content = content
        return response, content


class _BoundedTokenErrorLog(logging.Filter):
    """Cut oauth2client's own log of a token endpoint's refusal (the whole body) to its
    :func:`token_error_text`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Failed to retrieve access token: %s" and isinstance(record.args, tuple):
            record.args = tuple(token_error_text(arg) for arg in record.args)
        return True


logging.getLogger("oauth2client.client").addFilter(_BoundedTokenErrorLog())


def refresh_refused(error: google.auth.exceptions.RefreshError) -> TaskQueueError:
    """The error to raise when a refresh failed at the token endpoint.

    A failure google-auth marks retryable (a 5xx, 429 or 408 answer, or a
    ``temporarily_unavailable`` error) is a :class:`TaskQueueConnectionError`,
    so kombu and Celery reconnect and try again; a refusal is
    :class:`AuthenticationFailed`. Either says what the endpoint answered,
    bounded by :func:`token_error_text`.
    """
    # args[0] is google-auth's reason; args[1], when present, the answer's document.
    answer = error.args[1] if len(error.args) > 1 and isinstance(error.args[1], dict) else None
    reason = token_error_text(answer if answer is not None else error.args[0] if error.args else error)
    if error.retryable:
        return TaskQueueConnectionError(
            f"the token endpoint failed to refresh the credentials ({reason}); it may work again later"
        )
    return AuthenticationFailed(
        f"the token endpoint refused to refresh the credentials: {reason}; "
        "run pullqueue_authenticate again, or check the service-account key"
    )


class _AuthorizedHttp(google_auth_httplib2.AuthorizedHttp):
    """An AuthorizedHttp whose refresh failures are kombu_appengine errors."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().request(*args, **kwargs)
        except google.auth.exceptions.RefreshError as error:
            raise refresh_refused(error) from None
        except google.auth.exceptions.TransportError as error:
            raise TaskQueueConnectionError(
                f"cannot reach the token endpoint to refresh the credentials: {error}"
            ) from None


def authorized_http(credentials: Any, http: httplib2.Http) -> httplib2.Http:
    """``http`` signing every request with ``credentials``, refreshing them as needed.

    Raises (from its ``request``):
        AuthenticationFailed: the token endpoint refused to refresh them.
        TaskQueueConnectionError: the token endpoint could not be reached.
    """
    if not isinstance(credentials, google.auth.credentials.Credentials):
        credentials = as_google_auth(credentials)
    return _AuthorizedHttp(credentials, http=http)


class OAuth2ClientCredentials(google.auth.credentials.Credentials):
    """oauth2client credentials seen through google-auth.

    google-auth refreshes before the token expires; oauth2client alone would
    send an expired token and refresh only on the 401. Refreshing goes
    through oauth2client, so its storage (``set_store``, which
    ``Storage.get()`` does) gets the new token, and a newer token that
    another process already wrote there is used instead of refreshing again.
    """

    def __init__(self, wrapped: oauth2client.client.Credentials) -> None:
        super().__init__()
        #: The oauth2client credentials.
        self.wrapped = wrapped
        self._take_token()

    def _take_token(self) -> None:
        self.token = getattr(self.wrapped, "access_token", None)
        self.expiry = getattr(self.wrapped, "token_expiry", None)

    def refresh(self, request: Any) -> None:
        """Refresh through oauth2client (and its storage)."""
        http = AnswerKeepingHttp(timeout=REFRESH_TIMEOUT)
        try:
            self.wrapped.refresh(http)
        except oauth2client.client.HttpAccessTokenRefreshError as error:
            # oauth2client does not say whether trying again may help; its
            # status does, judged as google-auth judges its own refreshes.
            raise google.auth.exceptions.RefreshError(
                token_error_text(http.last_content or str(error)),
                retryable=error.status in google.auth.transport.DEFAULT_RETRYABLE_STATUS_CODES,
            ) from None
        except (httplib2.HttpLib2Error, OSError) as error:
            raise google.auth.exceptions.TransportError(repr(error)) from None
        self._take_token()


class GoogleAuthFileCredentials(google.auth.credentials.Credentials):
    """Credentials google-auth loaded from a file, whose failures to get a token name the file.

    An external account gets its first token at the first request, in two
    steps: its credential source (a file, a URL, a program) gives a subject
    token, which a security token service exchanges for an access token.
    google-auth reports a failed first step as a ``RefreshError`` (or a
    ``MalformedError``), which would read as a token endpoint refusing the
    credentials; here it is a :class:`ConfigurationError` that names the
    file and its credential source, and a refused exchange an
    :class:`AuthenticationFailed` that names the file and the service.

    Parameters:
        wrapped: the credentials google-auth loaded, with their scopes.
        path: the file.
        source: what named the file, for messages.
        token_url: the security token service the file names, if any.
    """

    def __init__(
        self, wrapped: google.auth.credentials.Credentials, path: str, source: str, token_url: Any = None
    ) -> None:
        super().__init__()
        #: The google-auth credentials.
        self.wrapped = wrapped
        self._path, self._source = path, source
        self._token_service = f"the security token service {token_url}" if token_url else "its token service"
        self._quota_project_id = getattr(wrapped, "quota_project_id", None)
        self.token, self.expiry = wrapped.token, wrapped.expiry

    def refresh(self, request: Any) -> None:
        """Refresh the wrapped credentials.

        Raises:
            AuthenticationFailed: the token service refused the exchange.
            ConfigurationError: the credential source gave no subject token.
            google.auth.exceptions.TransportError: a service could not be reached.
        """
        named = f"{self._source} {self._path}"
        try:
            self.wrapped.refresh(request)
        except google.auth.exceptions.TransportError:
            raise
        except google.auth.exceptions.OAuthError as error:
            # The service answered, and refused: args[1] is its answer.
            answer = error.args[1] if len(error.args) > 1 else error.args[0] if error.args else error
            raise AuthenticationFailed(
                f"{named}: {self._token_service} refused to exchange its subject token: "
                + token_error_text(answer)
            ) from None
        except (google.auth.exceptions.GoogleAuthError, ValueError, TypeError, KeyError, OSError) as error:
            raise ConfigurationError(
                f"{named}: cannot get an access token from its credential source: "
                + token_error_text(_one_line(error))
            ) from None
        self.token, self.expiry = self.wrapped.token, self.wrapped.expiry


class AuthorizedUserFileCredentials(user_credentials.Credentials):
    """An authorized-user file's credentials, writing refreshed tokens back to it.

    The new access token and its expiry are stored under ``token`` and
    ``expiry`` (the keys google-auth's ``to_json`` uses and
    ``from_authorized_user_info`` reads); every other field is kept. Before
    refreshing, a token that another process already wrote to the file is
    used if it is newer and still fresh. A file that cannot be written (a
    read-only secret mount, say) only costs a refresh at the next start.
    """

    #: The file the credentials came from and go back to.
    _path: str | None = None
    #: Serializes refreshes of one object (threads share it).
    _file_lock: threading.Lock

    @classmethod
    def from_file_info(cls, info: dict[str, Any], path: str) -> AuthorizedUserFileCredentials:
        """Credentials from the parsed authorized-user file at ``path``.

        Unlike google-auth's ``from_authorized_user_info``, the file's
        ``token_uri`` is honoured when it has one.

        Raises:
            ValueError: a required field is missing.
        """
        loaded = cls.from_authorized_user_info(info)
        token_uri = info.get("token_uri")
        if token_uri and token_uri != loaded.token_uri:
            expiry = loaded.expiry
            loaded = loaded.with_token_uri(token_uri)
            loaded.expiry = expiry
        loaded._path = path
        loaded._file_lock = threading.Lock()
        return loaded

    def refresh(self, request: Any) -> None:
        """Refresh, unless the file already holds a newer fresh token; write the new one back."""
        path = getattr(self, "_path", None)
        if path is None:
            super().refresh(request)
            return
        with self._file_lock:
            if self._take_newer_token_from_file(path):
                return
            super().refresh(request)
            self._write_token_to_file(path)

    def _take_newer_token_from_file(self, path: str) -> bool:
        try:
            stored = json.loads(read_credentials_file(path))
            token, expiry = stored["token"], _parse_expiry(stored["expiry"])
        except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
            return False
        if not token or token == self.token or expiry <= _utcnow() + FRESH_MARGIN:
            return False
        self.token, self.expiry = token, expiry
        return True

    def _write_token_to_file(self, path: str) -> None:
        try:
            stored = json.loads(read_credentials_file(path))
            stored["token"] = self.token
            stored["expiry"] = self.expiry.isoformat() + "Z" if self.expiry else None
            if self.refresh_token:
                stored["refresh_token"] = self.refresh_token
            write_private_file(
                path, json.dumps(stored, indent=2) + "\n", mode=stat.S_IMODE(os.stat(path).st_mode)
            )
        except (OSError, ValueError, RecursionError, TypeError) as error:
            logger.warning(
                "could not write the refreshed access token back to %s (%s): the next start refreshes again",
                path,
                getattr(error, "strerror", None) or type(error).__name__,
            )


def _utcnow() -> datetime.datetime:
    """Now, as google-auth keeps expiries: naive UTC."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _parse_expiry(text: str) -> datetime.datetime:
    """An ``expiry`` as google-auth writes it (naive UTC), as google-auth parses it."""
    return datetime.datetime.strptime(text.rstrip("Z").split(".")[0], "%Y-%m-%dT%H:%M:%S")


# -- storing ------------------------------------------------------------------


def replaceable_file(path: str) -> str:
    """The file that writing ``path`` replaces: ``path``, its symlinks followed.

    Raises:
        OSError: it exists and is not a regular file (a directory, a device,
            a FIFO, a socket: replacing one would turn it into a file holding
            tokens), or its directory does not exist; ``strerror`` says which.
    """
    target = os.path.realpath(path)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        directory = os.path.dirname(target) or "."
        if not os.path.isdir(directory):
            raise FileNotFoundError(errno.ENOENT, f"its directory {directory} does not exist") from None
        return target
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "it is a directory")
    if not stat.S_ISREG(mode):
        raise OSError(
            errno.EINVAL,
            "it exists and is not a regular file (a device, a FIFO or a socket): refusing to replace it",
        )
    return target


def check_replaceable(path: str) -> None:
    """Check that :func:`write_private_file` can write ``path``, writing nothing there.

    A temporary file is created in its directory and removed, as the write
    itself would, so a read-only file system or a directory without write
    permission is found too.

    Raises:
        OSError: it cannot; ``strerror`` says why.
    """
    descriptor, temporary = _temporary_beside(replaceable_file(path))
    os.close(descriptor)
    os.unlink(temporary)


def _temporary_beside(target: str) -> tuple[int, str]:
    """A new temporary file in the directory of ``target``: its descriptor and path."""
    return tempfile.mkstemp(
        dir=os.path.dirname(target) or ".", prefix="." + os.path.basename(target) + ".", suffix=".tmp"
    )


def write_private_file(path: str, text: str, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace the file at ``path`` (following a symlink) with ``text``, atomically.

    The text goes to a temporary file in the same directory, created with
    ``mode``, flushed to disk, then renamed over ``path``: readers see the
    old file or the new one, never a part.

    Raises:
        OSError: ``path`` is not a regular file (see :func:`replaceable_file`),
            or the directory cannot be written.
    """
    target = replaceable_file(path)
    descriptor, temporary = _temporary_beside(target)
    try:
        os.chmod(temporary, mode)
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class CredentialsFileStorage(oauth2client.client.Storage):
    """oauth2client's file storage format, written atomically with mode 0600.

    What ``pullqueue_authenticate`` writes and ``credentials_file`` reads
    when it is in this format: ``oauth2client.file.Storage(path).get()``
    reads the same file.
    """

    def __init__(self, path: str) -> None:
        super().__init__(lock=threading.Lock())
        #: The file.
        self.path = path

    def __repr__(self) -> str:
        return f"<CredentialsFileStorage {self.path!r}>"

    def locked_get(self) -> oauth2client.client.Credentials | None:
        """The stored credentials, set to write refreshes back here; ``None`` when unreadable."""
        try:
            content = read_credentials_file(self.path)
        except OSError:
            return None
        try:
            credentials = oauth2client.client.Credentials.new_from_json(content)
        except (ValueError, RecursionError, KeyError, TypeError, AttributeError, ImportError):
            return None
        credentials.set_store(self)
        return credentials

    def locked_put(self, credentials: oauth2client.client.Credentials) -> None:
        """Store ``credentials`` atomically, readable by the owner only."""
        write_private_file(self.path, credentials.to_json(), PRIVATE_FILE_MODE)

    def locked_delete(self) -> None:
        """Remove the file."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

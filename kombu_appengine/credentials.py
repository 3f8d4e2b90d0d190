"""Where the transport's OAuth 2.0 credentials come from, and how they sign requests.

Sources, first match wins: a ready ``credentials`` object (google-auth or
oauth2client); a ``credentials_storage`` (anything with ``.get()``, such as
``oauth2client.file.Storage``); a ``credentials_file`` (the file
``pullqueue_authenticate`` writes, a service-account key, or an
authorized-user file as gcloud writes it); otherwise Application Default
Credentials. An emulator needs none.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google_auth_httplib2
import httplib2
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from .errors import ConfigurationError

#: OAuth scope for every Task Queue call.
TASKQUEUE_SCOPE = "https://www.googleapis.com/auth/taskqueue"
#: OAuth scope for consuming only (lease, update, delete, get, list).
TASKQUEUE_CONSUMER_SCOPE = "https://www.googleapis.com/auth/taskqueue.consumer"


def load_credentials(
    credentials: Any = None,
    storage: Any = None,
    credentials_file: Optional[str] = None,
) -> Any:
    """The credentials to sign requests with, from the first source given.

    Raises:
        ConfigurationError: a source is given but holds no usable
            credentials; the message names the source.
    """
    if credentials is not None:
        return credentials
    if storage is not None:
        if not callable(getattr(storage, "get", None)):
            raise ConfigurationError("credentials_storage must have a get() method, "
                                     "like oauth2client.file.Storage")
        loaded = storage.get()
        if loaded is None:
            raise ConfigurationError(
                f"credentials_storage {storage!r} holds no credentials: "
                "run pullqueue_authenticate client_secrets.json FILE first")
        return loaded
    if credentials_file is not None:
        return credentials_from_file(credentials_file)
    try:
        found, _ = google.auth.default(scopes=[TASKQUEUE_SCOPE])
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise ConfigurationError(
            "no credentials: set the transport option credentials_file (see "
            "pullqueue_authenticate), credentials_storage or credentials, or set up "
            f"Application Default Credentials ({exc})") from None
    return found


def credentials_from_file(path: str) -> Any:
    """Credentials from a file, whatever its kind.

    Raises:
        ConfigurationError: the file is missing, not JSON, or of no known kind.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except OSError as exc:
        raise ConfigurationError(f"credentials_file {path}: cannot read: {exc.strerror}") from None
    except ValueError:
        raise ConfigurationError(f"credentials_file {path}: not a JSON credentials file") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"credentials_file {path}: not a JSON credentials file")
    if "_module" in data and "_class" in data:
        from oauth2client.file import Storage

        loaded = Storage(path).get()
        if loaded is None:
            raise ConfigurationError(f"credentials_file {path}: oauth2client could not read it")
        return loaded
    kind = data.get("type")
    if kind == "service_account":
        return service_account.Credentials.from_service_account_info(data, scopes=[TASKQUEUE_SCOPE])
    if kind == "authorized_user":
        return user_credentials.Credentials.from_authorized_user_info(data)
    raise ConfigurationError(
        f"credentials_file {path}: not a file written by pullqueue_authenticate, "
        "a service-account key or an authorized-user file")


def authorized_http(credentials: Any, http: httplib2.Http) -> Any:
    """``http`` signing every request with ``credentials`` (refreshing as needed)."""
    if hasattr(credentials, "authorize") and not isinstance(credentials, google.auth.credentials.Credentials):
        return credentials.authorize(http)
    return google_auth_httplib2.AuthorizedHttp(credentials, http=http)

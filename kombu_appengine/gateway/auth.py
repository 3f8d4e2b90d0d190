"""Who may call the gateway: bearer tokens checked at Google's token-info endpoint.

Every request needs an OAuth access token (user or service account alike).
:class:`TokenInfoAuthenticator` asks the token-info endpoint
(:data:`GOOGLE_TOKENINFO_URL`, or another, such as a test's) who the token
belongs to, keeps the answer briefly, and gives the REST front the caller's
email: the front then holds it to the queue's ``acl`` (``user_email`` entries
consume, ``writer_email`` entries insert), unless the email is on the
allow-list of service accounts, which may use every queue.

Tokens are kept only as SHA-256 digests, and neither tokens nor payloads
are ever logged.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Callable

from ..api import TASKQUEUE_CONSUMER_SCOPE, TASKQUEUE_SCOPE, USERINFO_EMAIL_SCOPE
from ..rest import errors
from ..rest.errors import ApiError
from ..rest.front import Identity, canonical_email

logger = logging.getLogger(__name__)

#: Google's token-info endpoint.
GOOGLE_TOKENINFO_URL = "https://oauth2.googleapis.com/tokeninfo"
#: Seconds a token's answer is reused (never past the token's own expiry).
CACHE_SECONDS = 60.0
#: Most tokens whose answers are kept.
CACHE_SIZE = 10_000
#: Seconds to wait for the token-info endpoint.
TIMEOUT_SECONDS = 10.0
#: Most bytes of a token-info error answer read (Google's are some 100).
MAX_ERROR_BYTES = 64 * 1024
#: Scopes that give access to the Task Queue API.
TASKQUEUE_SCOPES = frozenset({TASKQUEUE_SCOPE, TASKQUEUE_CONSUMER_SCOPE})


def check_tokeninfo_url(url: str) -> str:
    """``url`` when it can be a token-info endpoint: ``http`` or ``https``, a host, no query or fragment.

    Raises:
        ValueError: saying what is wrong with it.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as error:
        raise ValueError(f"the token-info URL {url!r} is malformed: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the token-info URL {url!r} must be http:// or https:// and name a host")
    if "?" in url or "#" in url:
        raise ValueError(
            f"the token-info URL {url!r} must have no query or fragment: ?access_token= is added"
        )
    return url


class TokenInfoAuthenticator:
    """Verify bearer tokens at a token-info endpoint.

    Parameters:
        tokeninfo_url: the endpoint (``?access_token=`` is added).
        allowed_service_accounts: emails allowed on every queue, whatever
            its ACL.
        cache_seconds: how long an answer is reused.
        clock: seconds, for the cache (:func:`time.monotonic`).
    """

    def __init__(
        self,
        tokeninfo_url: str = GOOGLE_TOKENINFO_URL,
        allowed_service_accounts: Iterable[str] = (),
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokeninfo_url = check_tokeninfo_url(tokeninfo_url)
        self.allowed = frozenset(
            canonical_email(email) for email in allowed_service_accounts if email.strip()
        )
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: collections.OrderedDict[str, tuple[float, Identity]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def identify(self, token: str | None) -> Identity:
        """The caller of a request carrying ``token``.

        Raises:
            ApiError: 401 without a token or with one the endpoint says is
                not valid (400 ``invalid_token``);
                403 for a token without a Task Queue scope, or without an
                email (one not granted the userinfo.email scope); 503 when
                the endpoint cannot be reached or answers anything else
                (throttled with 429, a 5xx, not a JSON object): retryable.
        """
        if token is None:
            raise errors.login_required()
        key = hashlib.sha256(token.encode("utf-8")).hexdigest()
        now = self.clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        identity, lifetime = self._ask(token)
        with self._lock:
            self._cache[key] = (now + min(self.cache_seconds, lifetime), identity)
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return identity

    def _ask(self, token: str) -> tuple[Identity, float]:
        url = f"{self.tokeninfo_url}?{urllib.parse.urlencode({'access_token': token})}"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as answer:
                info = json.loads(answer.read())
        except urllib.error.HTTPError as error:
            if _says_invalid_token(error):
                logger.info("the token-info endpoint refused a bearer token (%s)", error.code)
                raise errors.invalid_credentials() from None
            # Throttled (429), failing (5xx) or anything else: the token may
            # well be valid, so the caller is told to retry, never that its
            # credentials are bad.
            raise _unreachable(f"answered {error.code}") from None
        except (OSError, ValueError) as error:
            raise _unreachable(type(error).__name__) from None
        if not isinstance(info, dict):
            raise _unreachable(f"answered JSON that is not an object but {type(info).__name__}")
        scopes = set(str(info.get("scope", "")).split())
        if not scopes & TASKQUEUE_SCOPES:
            raise errors.forbidden(
                "The access token does not carry the Task Queue scope "
                f"({TASKQUEUE_SCOPE} or {TASKQUEUE_CONSUMER_SCOPE})"
            )
        email = info.get("email") if str(info.get("email_verified", "true")).lower() == "true" else None
        email = canonical_email(str(email)) if email else None
        if email is None:
            # Google reports a token's email only when the token carries an
            # email scope; without one, no ACL and no allow-list can admit it.
            raise errors.forbidden(
                "The access token carries no (verified) email, so the gateway cannot tell whose it is: "
                f"request the {USERINFO_EMAIL_SCOPE} scope beside the Task Queue scope"
            )
        try:
            lifetime = float(info.get("expires_in", self.cache_seconds))
        except (TypeError, ValueError):
            lifetime = self.cache_seconds
        identity = Identity(email, email in self.allowed, consume_only=TASKQUEUE_SCOPE not in scopes)
        return identity, max(lifetime, 0.0)


def _says_invalid_token(error: urllib.error.HTTPError) -> bool:
    """Whether a token-info error answer is Google's for a token it does not know: 400 ``invalid_token``."""
    if error.code != 400:
        return False
    try:
        document = json.loads(error.read(MAX_ERROR_BYTES))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and document.get("error") == "invalid_token"


def _unreachable(why: str) -> ApiError:
    logger.warning("cannot verify bearer tokens: the token-info endpoint failed (%s)", why)
    return errors.backend_error("Cannot verify the access token now: the token-info endpoint failed")

"""The one error type of the REST front and its backends, rendered as Google's JSON error body."""

from __future__ import annotations

import json
from typing import Any


class ApiError(Exception):
    """A failed API call: an HTTP status, Google's ``reason`` and a message.

    Domain code raises it; the HTTP layer renders it with :meth:`body`.
    """

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        """Google's error document for this error."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"domain": "global", "reason": self.reason, "message": self.message}],
            }
        }

    def body(self) -> bytes:
        """The error document serialized as UTF-8 JSON."""
        return json.dumps(self.to_dict()).encode("utf-8")

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.reason!r}, {self.message!r})"


def bad_request(message: str, reason: str = "invalid") -> ApiError:
    """400: a parameter or body the API refuses."""
    return ApiError(400, reason, message)


def not_found(message: str) -> ApiError:
    """404: an unknown project, queue, task or path."""
    return ApiError(404, "notFound", message)


def method_not_allowed(method: str, path: str) -> ApiError:
    """405: a path that exists, asked with a verb it does not take."""
    return ApiError(405, "httpMethodNotAllowed", f"{method} is not allowed on {path}")


def conflict(message: str) -> ApiError:
    """409: a task name that exists or was deleted recently."""
    return ApiError(409, "alreadyExists", message)


def backend_error(message: str) -> ApiError:
    """503: the server could not do it now (its storage failed); clients retry."""
    return ApiError(503, "backendError", message)


def internal_error() -> ApiError:
    """500: the server failed where it should not have (a bug): Google's own answer to that."""
    return ApiError(500, "backendError", "Backend Error")


def login_required() -> ApiError:
    """401: the request carries no bearer token."""
    return ApiError(401, "required", "Login Required.")


def invalid_credentials() -> ApiError:
    """401: the bearer token is not one the server accepts."""
    return ApiError(401, "authError", "Invalid Credentials")


#: Most digits of a ``Content-Length`` read as a number (leading zeros aside);
#: a longer one is more bytes than any body a server takes (and more than
#: ``int()`` converts, at thousands of digits).
MAX_LENGTH_DIGITS = 18


def too_large(limit: int) -> ApiError:
    """413 for a body over ``limit`` bytes."""
    return ApiError(413, "uploadTooLarge", f"Request body over {limit} bytes, the limit of this endpoint")


def forbidden(message: str) -> ApiError:
    """403: the caller is not allowed by the queue's ACL."""
    return ApiError(403, "forbidden", message)


def insufficient_scope(message: str) -> ApiError:
    """403: the token's OAuth scopes do not cover the call (Google's ``insufficientPermissions``)."""
    return ApiError(403, "insufficientPermissions", message)

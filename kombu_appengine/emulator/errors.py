"""The error type of the emulator: the REST front's own (:mod:`kombu_appengine.rest.errors`)."""

from ..rest.errors import *  # noqa: F403
from ..rest.errors import ApiError

__all__ = ["ApiError"]

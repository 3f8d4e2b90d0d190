"""The emulator's REST surface: the front it shares with the gateway (:mod:`kombu_appengine.rest.front`)."""

from ..rest.front import *  # noqa: F403
from ..rest.front import TOKENS_KEPT, Response, RestApi, resolve

__all__ = ["TOKENS_KEPT", "Response", "RestApi", "resolve"]

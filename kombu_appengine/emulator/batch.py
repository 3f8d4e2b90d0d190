"""The emulator's batch endpoint: the REST front's (:mod:`kombu_appengine.rest.batch`)."""

from ..rest.batch import *  # noqa: F403
from ..rest.batch import answer_batch

__all__ = ["answer_batch"]

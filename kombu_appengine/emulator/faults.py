"""Injected failures: the REST front's retry tests and faults (:mod:`kombu_appengine.rest.faults`)."""

from ..rest.faults import *  # noqa: F403
from ..rest.faults import RETRY_TEST_HEADER, RETRY_TEST_PATH, Fault, FaultInjector, ResetConnection

__all__ = ["RETRY_TEST_HEADER", "RETRY_TEST_PATH", "Fault", "FaultInjector", "ResetConnection"]

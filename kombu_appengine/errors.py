"""The errors of kombu_appengine, one hierarchy, and its one warning.

They subclass amqp's (and so kombu's) connection and channel errors, so
kombu's ``Connection.ensure`` and Celery reconnect where they should:
:class:`TaskQueueConnectionError` means "the service cannot be reached now,
try again", :class:`TaskQueueChannelError` means "this request is wrong".

:class:`UnknownTransportOptionWarning` is a warning, not an error: filter it
with :func:`warnings.filterwarnings` like any other.
"""

from __future__ import annotations

from typing import Any

from amqp import ChannelError, ConnectionError


class TaskQueueError(Exception):
    """Base of every error raised by kombu_appengine."""

    def __reduce__(self) -> Any:
        # amqp's errors keep odd ``args``; rebuild from the message alone.
        return type(self), (str(self),)


class TaskQueueConnectionError(TaskQueueError, ConnectionError):
    """The service could not be reached or kept failing after every retry."""


class TaskQueueChannelError(TaskQueueError, ChannelError):
    """The service refused a request; retrying the same request will not help.

    Attributes:
        status: the HTTP status of the refusal, when there was one.
        reason: Google's ``reason`` for it (``notFound``, ``invalid`` ...).
    """

    def __init__(self, message: str, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason

    def __reduce__(self) -> Any:
        return type(self), (str(self), self.status, self.reason)


class QueueNotFound(TaskQueueChannelError):
    """The queue is not a pull queue of the project (and no ``shared_queue`` can hold it)."""


class TaskNotFound(TaskQueueChannelError):
    """The task does not exist (any more)."""


class LeaseLost(TaskQueueChannelError):
    """The lease on a task expired (or was never held) before it was changed."""


class AuthenticationFailed(TaskQueueChannelError):
    """The service refused the credentials (401) or the queue's ACL refused them (403)."""


class PayloadTooLarge(TaskQueueChannelError):
    """A message is larger than the 1 MiB a task may carry."""


class TaskNotDelivered(TaskQueueError):
    """A task was leased but could not be made a kombu message (its payload is one kombu cannot read).

    Its lease is kept, filed under :attr:`delivery_tag` like a delivered
    message's, for the caller to settle as it would a message's: the
    channel's ``retry_later``, ``dead_letter`` or ``basic_reject``. Unsettled,
    it is renewed until the channel closes, which gives it back. The error
    that stopped the delivery is the ``__cause__``.

    Attributes:
        queue: the kombu queue it was leased for.
        task_id: the task's name.
        delivery_tag: the tag its lease is filed under.
        retry_count: how many times the task was leased, this lease included.
    """

    def __init__(self, message: str, queue: str, task_id: str, delivery_tag: str, retry_count: int) -> None:
        super().__init__(message)
        self.queue = queue
        self.task_id = task_id
        self.delivery_tag = delivery_tag
        self.retry_count = retry_count

    def __reduce__(self) -> Any:
        return type(self), (str(self), self.queue, self.task_id, self.delivery_tag, self.retry_count)


class ConfigurationError(TaskQueueError, ValueError):
    """A transport option or credentials setting is missing or wrong."""


class UnknownTransportOptionWarning(UserWarning):
    """A transport option the transport does not know (a typo, or another transport's option) is ignored.

    The message names the option and the nearest one this transport has.
    """

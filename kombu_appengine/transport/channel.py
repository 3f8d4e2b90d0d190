"""The kombu channel on pull queues, and its QoS.

The channel overrides only the virtual transport's hooks it needs; every
lease it takes lives in its :class:`~kombu_appengine.transport.leases.LeaseBook`,
which does the HTTP work of acks, rejects and renewals in the background.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable
from queue import Empty
from typing import Any

from kombu.transport import virtual

from .. import api
from ..client import TaskQueueClient
from ..errors import QueueNotFound, TaskNotDelivered
from .codec import Message, message_of, payload_of
from .leases import Lease, LeaseBook
from .options import Settings
from .routing import Route, route_of

logger = logging.getLogger(__name__)


#: Every open channel of this process, to give them fresh lease books after a fork.
_CHANNELS: weakref.WeakSet[Channel] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent holds the leases, and the child has none of its threads (nor
    # locks that another thread may have held at the fork).
    for channel in list(_CHANNELS):
        channel._book.reset_after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


class QoS(virtual.QoS):
    """kombu's bookkeeping of unacknowledged messages, restored in batches."""

    def restore_unacked(self) -> list[Any]:
        """Give every unacknowledged message back: lease releases, sent in batches.

        Returns no errors for kombu to dump: a release that fails loses
        nothing, since the task comes back when its lease ends.
        """
        self._flush()
        messages = list(self._delivered.values())
        self._delivered.clear()
        self.channel.release_messages(messages)
        return []


class Channel(virtual.Channel):
    """A kombu channel on pull queues."""

    QoS = QoS
    Message = Message
    do_restore = True
    supports_fanout = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings: Settings = self.connection.settings
        self.client: TaskQueueClient = self.connection.client_for_channels
        self._routes: dict[str, Route] = {}
        self._no_ack_queues: set[str] = set()
        self._book = LeaseBook(self.client, self.settings, name=f"channel-{self.channel_id}")
        #: The deadline of the drain_events call in progress, per thread.
        self._polling = threading.local()
        _CHANNELS.add(self)

    # -- queues -------------------------------------------------------------

    def _route(self, queue: str) -> Route:
        route = self._routes.get(queue)
        if route is None:
            route = self._routes[queue] = route_of(self.client, queue, self.settings.shared_queue)
        return route

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        self._route(queue)

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        try:
            self._route(queue)
        except QueueNotFound:
            return False
        return True

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self._routes.pop(queue, None)

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any) -> Any:
        """Delete a kombu queue.

        A queue living on ``shared_queue`` is its tagged tasks: they are all
        deleted with it, those other consumers hold included. A pull queue
        cannot be deleted through the API (it is declared in ``queue.yaml``):
        its tasks stay, and the channel only forgets it.
        """
        if if_empty and self._size(queue):
            return None
        try:
            route = self._route(queue)
        except QueueNotFound:
            route = None
        if route is not None and route.tag is not None:
            self._book.delete_buffered(queue)
            self._book.flush()
            self._delete_tagged(route)
        result = super().queue_delete(queue, if_unused=if_unused, if_empty=False, **kwargs)
        self._routes.pop(queue, None)
        return result

    def _delete_tagged(self, route: Route) -> int:
        """Delete every task of a tag, held or not: those listed, then those leased by the tag."""
        deleted = 0
        while True:
            names = {
                task["id"]
                for task in self.client.list_tasks(route.pull_queue)
                if task.get("tag") == route.tag
            }
            names.update(
                task["id"]
                for task in self.client.lease(
                    route.pull_queue, api.MAX_NUM_TASKS, self.settings.lease_secs, tag=route.tag
                )
            )
            if not names:
                return deleted
            outcomes = self.client.delete_many(route.pull_queue, names)
            deleted += sum(1 for outcome in outcomes.values() if outcome is None)

    def _size(self, queue: str) -> int:
        # Acknowledged tasks waiting for their batch are gone for kombu.
        self._book.flush()
        route = self._route(queue)
        if route.tag is None:
            return int(self.client.get_queue(route.pull_queue, stats=True)["stats"]["totalTasks"])
        # Stats do not count by tag: count the tagged tasks among the first
        # hundred the list shows.
        return sum(1 for task in self.client.list_tasks(route.pull_queue) if task.get("tag") == route.tag)

    def _purge(self, queue: str) -> int:
        """Delete the queue's ready tasks: those buffered here, and those no one holds.

        Tasks other consumers hold are theirs (kombu's purge removes ready
        messages only); they are found by leasing, which only takes tasks
        no one holds.
        """
        route = self._route(queue)
        purged = self._book.delete_buffered(queue)
        self._book.flush()
        while True:
            tasks = self.client.lease(
                route.pull_queue, api.MAX_NUM_TASKS, self.settings.lease_secs, tag=route.tag
            )
            if not tasks:
                return purged
            outcomes = self.client.delete_many(route.pull_queue, [task["id"] for task in tasks])
            purged += sum(1 for outcome in outcomes.values() if outcome is None)

    # -- publishing ---------------------------------------------------------

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        route = self._route(queue)
        if self.settings.message_format == "raw":
            body = self.decode_body(message["body"], message["properties"].get("body_encoding"))
            payload = body.encode("utf-8") if isinstance(body, str) else body
        else:
            payload = json.dumps(message).encode("utf-8")
        self.client.insert(route.pull_queue, payload, tag=route.tag)

    # -- consuming ----------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            self._no_ack_queues.discard(queue)
            # No one takes them from here now: others may have them at once
            # (a warm shutdown of Celery cancels its task consumer before it
            # waits for the running tasks). Closing sends them with the rest.
            self._book.release_buffered(queue)
            if not self.closed:
                self._book.flush()
        return result

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """The next message of ``queue``, or ``None`` when it has none now.

        Raises:
            TaskNotDelivered: a task was leased but could not be made a
                message; its lease is kept under the error's delivery tag,
                for the caller to settle (``retry_later``, ``dead_letter``,
                ``basic_reject``).
        """
        try:
            lease, delivery_tag = self._deliver(queue)
        except Empty:
            return None
        try:
            message = self.Message(self._to_message(lease, queue, delivery_tag), channel=self)
        except Exception as error:
            retry_count = lease.task.get("retry_count")
            raise TaskNotDelivered(
                f"task {lease.task_id} of queue {queue!r} could not be made a kombu message: {error!r}",
                queue,
                lease.task_id,
                delivery_tag,
                int(str(retry_count)) if str(retry_count).isdigit() else 1,
            ) from error
        if no_ack:
            self._book.ack(delivery_tag)
        else:
            self.qos.append(message, delivery_tag)
        return message

    def _poll(self, cycle: Any, callback: Any, timeout: float | None = None) -> Any:
        # kombu does not hand drain_events' timeout to _get: keep it here, so
        # that a get never waits longer for a lease than drain_events may.
        self._polling.deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return super()._poll(cycle, callback, timeout=timeout)
        finally:
            self._polling.deadline = None

    def _get(self, queue: str, timeout: float | None = None, auto_ack: bool | None = None) -> dict[str, Any]:
        lease, delivery_tag = self._deliver(queue)
        message = self._to_message(lease, queue, delivery_tag)
        if auto_ack if auto_ack is not None else queue in self._no_ack_queues:
            self._book.ack(delivery_tag)
        return message

    def _deliver(self, queue: str) -> tuple[Lease, str]:
        """The next lease of ``queue``, filed as delivered under a new delivery tag.

        Raises:
            Empty: the queue has nothing now.
        """
        route = self._route(queue)
        delivery_tag = self._next_delivery_tag()
        lease = self._book.get(
            queue,
            route,
            self.qos.can_consume_max_estimate(),
            getattr(self._polling, "deadline", None),
            delivery_tag,
        )
        if lease is None:
            raise Empty()
        return lease, delivery_tag

    def _to_message(self, lease: Lease, queue: str, delivery_tag: str) -> dict[str, Any]:
        """kombu's message for a leased task, with this delivery's tag and information."""
        message = message_of(payload_of(lease.task), queue)
        retry_count = int(lease.task.get("retry_count", 1))
        properties = message["properties"]
        properties["delivery_tag"] = delivery_tag
        delivery_info = properties.setdefault("delivery_info", {})
        delivery_info.setdefault("exchange", "")
        delivery_info.setdefault("routing_key", queue)
        delivery_info["redelivered"] = retry_count > 1
        delivery_info["task_id"] = lease.task_id
        delivery_info["retry_count"] = retry_count
        message["redelivered"] = retry_count > 1
        return message

    # -- acknowledgement ----------------------------------------------------
    #
    # Each of these only files the message's fate in the lease book and frees
    # its prefetch slot at once; the book sends the calls in batches.

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        try:
            self._book.ack(delivery_tag)
        finally:
            super().basic_ack(delivery_tag)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            if not requeue:
                self._book.ack(delivery_tag)
        finally:
            # With requeue, kombu's QoS calls _restore.
            super().basic_reject(delivery_tag, requeue=requeue)

    def _restore(self, message: Any) -> None:
        """Give an unacknowledged message back: release its lease, never copy it."""
        self._book.give_back(message.delivery_tag)

    def retry_later(self, delivery_tag: str, seconds: int) -> None:
        """Give an unacknowledged message back to be leased again in ``seconds``.

        A lease change, never a copy: the task keeps its name and retry count.
        """
        try:
            self._book.give_back(delivery_tag, seconds)
        finally:
            super().basic_ack(delivery_tag)

    def dead_letter(self, delivery_tag: str, queue: str) -> None:
        """Move an unacknowledged message's task to the kombu queue ``queue``.

        The task's payload is inserted there unchanged, then the task is
        deleted: if the insert fails, the task stays where it was, and comes
        back when its lease ends.
        """
        try:
            lease = self._book.lease_of(delivery_tag)
            if lease is not None:
                route = self._route(queue)
                try:
                    self.client.insert(route.pull_queue, payload_of(lease.task), tag=route.tag)
                except BaseException:
                    self._book.abandon(delivery_tag)
                    raise
                self._book.ack(delivery_tag)
        finally:
            super().basic_ack(delivery_tag)

    def queue_max_leases(self, queue: str) -> int | None:
        """The pull queue's ``maxLeases`` (``task_retry_limit``), if it has one."""
        route = self._route(queue)
        value = self.client.get_queue(route.pull_queue).get("maxLeases")
        return int(value) if value is not None else None

    def release_messages(self, messages: Iterable[Any]) -> None:
        """Give unacknowledged messages back (lease releases, sent in batches).

        Messages a parent process delivered before this one was forked are
        left to the parent.
        """
        for message in messages:
            self._book.give_back(message.delivery_tag, inherited=False)

    # -- the lease book -------------------------------------------------------

    def flush(self) -> None:
        """Send now the deletes, releases and lease changes waiting for their batch.

        Returns when the service answered. Acks are batched (see the
        transport option ``ack_batch_size``); this is for code that must see
        their effect on the queue at once, such as a test.
        """
        self._book.flush()

    def buffered(self, queue: str) -> int:
        """How many tasks of the kombu queue ``queue`` wait in this channel's buffer."""
        return self._book.buffered(queue)

    def release_buffered(self, queue: str | None = None) -> int:
        """Release the leases of the tasks buffered but not yet delivered.

        Other consumers can lease them at once. Safe to call from another
        thread than the consuming one. Returns how many were released.

        Parameters:
            queue: only the tasks buffered for this kombu queue; default all.
        """
        released = self._book.release_buffered(queue)
        self._book.flush()
        return released

    # -- closing ------------------------------------------------------------

    def close(self) -> None:
        """Release every lease this channel holds, send what is pending, then close."""
        if self.closed:
            return super().close()
        try:
            super().close()
        finally:
            self._book.close()

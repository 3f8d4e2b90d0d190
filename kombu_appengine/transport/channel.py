"""The kombu channel on pull queues, and its QoS."""

from __future__ import annotations

import base64
import collections
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

from ..api import MAX_TAG_BYTES
from ..client import TaskQueueClient
from ..errors import QueueNotFound, TaskQueueChannelError, TaskQueueConnectionError
from ..names import pull_queue_name
from .codec import is_envelope, payload_of
from .leases import Lease
from .options import Settings
from .routing import Route

logger = logging.getLogger(__name__)


#: Every open channel of this process, to give them fresh locks after a fork.
_CHANNELS: weakref.WeakSet[Channel] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by another thread at the fork would never be released in
    # the child, whose only thread is the one that forked.
    for channel in list(_CHANNELS):
        channel._lock = threading.Lock()
        channel._keeper_stop = threading.Event()
        channel._keeper = None


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


class QoS(virtual.QoS):
    """kombu's bookkeeping of unacknowledged messages, restored in batches."""

    def restore_unacked(self) -> list[Any]:
        """Give every unacknowledged message back: one batch of lease releases per queue.

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
    do_restore = True
    supports_fanout = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings: Settings = self.connection.settings
        self.client: TaskQueueClient = self.connection.client_for_channels
        self._routes: dict[str, Route] = {}
        self._buffers: dict[str, collections.deque[Lease]] = collections.defaultdict(collections.deque)
        self._unacked: dict[str, Lease] = {}
        self._no_ack_queues: set[str] = set()
        self._lock = threading.Lock()
        self._keeper_stop = threading.Event()
        self._keeper: threading.Thread | None = None
        _CHANNELS.add(self)

    # -- queues -------------------------------------------------------------

    def _route(self, queue: str) -> Route:
        route = self._routes.get(queue)
        if route is not None:
            return route
        pull = pull_queue_name(queue)
        shared = self.settings.shared_queue
        try:
            self.client.get_queue(pull)
            route = Route(pull)
        except QueueNotFound:
            if shared is None:
                raise QueueNotFound(
                    f"kombu queue {queue!r} has no pull queue {pull!r} in project "
                    f"{self.settings.project!r}: declare it in queue.yaml with 'mode: pull', "
                    "or set the transport option shared_queue to a pull queue that can hold it"
                ) from None
            if len(queue.encode("utf-8")) > MAX_TAG_BYTES:
                raise TaskQueueChannelError(
                    f"kombu queue name {queue[:60]!r}... is over {MAX_TAG_BYTES} bytes: "
                    "too long to be a tag on shared_queue"
                ) from None
            try:
                self.client.get_queue(shared)
            except QueueNotFound:
                raise QueueNotFound(
                    f"kombu queue {queue!r} has no pull queue of its own, and the shared_queue "
                    f"{shared!r} does not exist in project {self.settings.project!r} either: "
                    "declare it in queue.yaml with 'mode: pull'"
                ) from None
            route = Route(shared, queue)
        self._routes[queue] = route
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
        # Pull queues cannot be deleted through the API: forget the route only.
        self._routes.pop(queue, None)

    def _size(self, queue: str) -> int:
        route = self._route(queue)
        if route.tag is None:
            return int(self.client.get_queue(route.pull_queue, stats=True)["stats"]["totalTasks"])
        # Stats do not count by tag: count the tagged tasks among the first
        # hundred the list shows.
        return sum(1 for task in self.client.list_tasks(route.pull_queue) if task.get("tag") == route.tag)

    def _purge(self, queue: str) -> int:
        route = self._route(queue)
        purged = 0
        while True:
            # Listed tasks include those other consumers hold; a tag's tasks
            # beyond the first hundred listed are reached by leasing the tag.
            names = {
                task["id"]
                for task in self.client.list_tasks(route.pull_queue)
                if route.tag is None or task.get("tag") == route.tag
            }
            if route.tag is not None:
                names.update(
                    task["id"]
                    for task in self.client.lease(
                        route.pull_queue, 1000, self.settings.lease_secs, tag=route.tag
                    )
                )
            if not names:
                return purged
            self.client.delete_many(route.pull_queue, names)
            purged += len(names)

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
            # waits for the running tasks).
            self.release_buffered(queue)
        return result

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        try:
            message = self.Message(self._get(queue, auto_ack=no_ack), channel=self)
        except Empty:
            return None
        if not no_ack:
            self.qos.append(message, message.delivery_tag)
        return message

    def _lease_count(self) -> int:
        allowed = self.qos.can_consume_max_estimate()
        return self.settings.num_tasks if allowed is None else max(1, min(allowed, self.settings.num_tasks))

    def _next_fresh(self, buffer: collections.deque[Lease]) -> Lease | None:
        deadline = time.monotonic() + self.settings.lease_secs / 2
        while buffer:
            lease = buffer.popleft()
            if lease.expires > deadline:
                return lease
            logger.debug("dropping buffered task %s: its lease is about to end", lease.task_id)
        return None

    def _get(self, queue: str, timeout: float | None = None, auto_ack: bool | None = None) -> dict[str, Any]:
        buffer = self._buffers[queue]
        lease = self._next_fresh(buffer)
        if lease is None:
            route = self._route(queue)
            started = time.monotonic()
            tasks = self.client.lease(
                route.pull_queue, self._lease_count(), self.settings.lease_secs, tag=route.tag
            )
            expires = started + self.settings.lease_secs
            buffer.extend(Lease(route, task["id"], expires, task) for task in tasks)
            lease = self._next_fresh(buffer)
            if lease is None:
                raise Empty()
        if auto_ack if auto_ack is not None else queue in self._no_ack_queues:
            self.client.delete(lease.route.pull_queue, lease.task_id)
            return self._to_message(lease, queue)
        message = self._to_message(lease, queue)
        with self._lock:
            self._unacked[message["properties"]["delivery_tag"]] = lease
        self._start_keeper()
        return message

    def _to_message(self, lease: Lease, queue: str) -> dict[str, Any]:
        """kombu's message for a leased task: its envelope, or the raw payload wrapped."""
        payload = payload_of(lease.task)
        document: Any = None
        try:
            document = json.loads(payload)
            is_json = True
        except (ValueError, UnicodeDecodeError):
            is_json = False
        if is_envelope(document):
            message = document
        else:
            message = {
                "body": base64.b64encode(payload).decode("ascii"),
                "content-type": "application/json" if is_json else "application/data",
                "content-encoding": "utf-8" if is_json else "binary",
                "headers": {},
                "properties": {
                    "body_encoding": "base64",
                    "delivery_info": {"exchange": "", "routing_key": queue},
                    "delivery_mode": 2,
                    "priority": 0,
                },
            }
        properties = message["properties"]
        redelivered = int(lease.task.get("retry_count", 1)) > 1
        properties["delivery_tag"] = self._next_delivery_tag()
        delivery_info = properties.setdefault("delivery_info", {})
        delivery_info.setdefault("exchange", "")
        delivery_info.setdefault("routing_key", queue)
        delivery_info["redelivered"] = redelivered
        delivery_info["task_id"] = lease.task_id
        delivery_info["retry_count"] = int(lease.task.get("retry_count", 1))
        message["redelivered"] = redelivered
        return message

    # -- acknowledgement ----------------------------------------------------

    def _take(self, delivery_tag: str) -> Lease | None:
        with self._lock:
            return self._unacked.pop(delivery_tag, None)

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        lease = self._take(delivery_tag)
        try:
            if lease is not None:
                self.client.delete(lease.route.pull_queue, lease.task_id)
        finally:
            super().basic_ack(delivery_tag)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if not requeue:
            lease = self._take(delivery_tag)
            if lease is not None:
                self.client.delete(lease.route.pull_queue, lease.task_id)
        super().basic_reject(delivery_tag, requeue=requeue)

    def retry_later(self, delivery_tag: str, seconds: int) -> None:
        """Give an unacknowledged message back to be leased again in ``seconds``.

        A lease change, never a copy: the task keeps its name and retry count.
        """
        lease = self._take(delivery_tag)
        try:
            if lease is not None:
                self.client.change_lease(lease.route.pull_queue, lease.task_id, seconds)
        finally:
            super().basic_ack(delivery_tag)

    def dead_letter(self, delivery_tag: str, queue: str) -> None:
        """Move an unacknowledged message's task to the kombu queue ``queue``.

        The task's payload is inserted there unchanged, then the task is
        deleted: if the insert fails, the task stays where it was.
        """
        lease = self._take(delivery_tag)
        try:
            if lease is not None:
                payload = payload_of(lease.task)
                route = self._route(queue)
                self.client.insert(route.pull_queue, payload, tag=route.tag)
                self.client.delete(lease.route.pull_queue, lease.task_id)
        finally:
            super().basic_ack(delivery_tag)

    def queue_max_leases(self, queue: str) -> int | None:
        """The pull queue's ``maxLeases`` (``task_retry_limit``), if it has one."""
        route = self._route(queue)
        value = self.client.get_queue(route.pull_queue).get("maxLeases")
        return int(value) if value is not None else None

    def release_messages(self, messages: Iterable[Any]) -> None:
        """Release the leases of unacknowledged messages, in one batch per queue."""
        self._release([self._take(message.delivery_tag) for message in messages], "unacknowledged")

    def _release(self, leases: Iterable[Lease | None], what: str) -> int:
        """Release the leases this process took, in batches; failures only cost their lease time."""
        by_queue: dict[str, list[str]] = collections.defaultdict(list)
        for lease in leases:
            if lease is not None and lease.pid == os.getpid():
                by_queue[lease.route.pull_queue].append(lease.task_id)
        released = 0
        for pull_queue, names in by_queue.items():
            try:
                self.client.release_many(pull_queue, names)
                released += len(names)
            except (TaskQueueConnectionError, TaskQueueChannelError) as error:
                logger.warning(
                    "could not release %d %s tasks of queue %r (%s): they come back when their leases end",
                    len(names),
                    what,
                    pull_queue,
                    error,
                )
        return released

    def _restore(self, message: Any) -> None:
        """Give an unacknowledged message back: release its lease, never copy it."""
        lease = self._take(message.delivery_tag)
        if lease is not None and lease.pid == os.getpid():
            self.client.release(lease.route.pull_queue, lease.task_id)

    # -- lease keeping --------------------------------------------------------

    def _start_keeper(self) -> None:
        if self._keeper is None or not self._keeper.is_alive():
            self._keeper_stop.clear()
            self._keeper = threading.Thread(
                target=self._keep_leases, daemon=True, name=f"kombu-appengine-lease-keeper-{self.channel_id}"
            )
            self._keeper.start()

    def _keep_leases(self) -> None:
        lease_secs = self.settings.lease_secs
        while not self._keeper_stop.wait(lease_secs / 4):
            try:
                self.extend_leases()
            except Exception:
                logger.exception("could not extend leases; trying again in %.1fs", lease_secs / 4)

    def extend_leases(self) -> int:
        """Renew every unacknowledged lease with less than half its length left.

        The background keeper calls this every ``lease_secs / 4`` seconds.
        Returns how many leases were renewed.
        """
        lease_secs = self.settings.lease_secs
        horizon = time.monotonic() + lease_secs / 2
        with self._lock:
            due = [
                (tag, lease)
                for tag, lease in self._unacked.items()
                if lease.expires < horizon and not lease.lost
            ]
        renewed = 0
        for tag, lease in due:
            started = time.monotonic()
            # Renew under the lock that ack, reject and restore take the
            # lease with: a lease given back meanwhile is never renewed after
            # its release (which would hide the task for lease_secs).
            with self._lock:
                if tag not in self._unacked:
                    continue
                try:
                    self.client.change_lease(lease.route.pull_queue, lease.task_id, lease_secs)
                except TaskQueueChannelError as error:
                    lease.lost = True
                    logger.warning(
                        "lost the lease on task %s of queue %r before it was renewed (%s): "
                        "another consumer may get it",
                        lease.task_id,
                        lease.route.pull_queue,
                        error,
                    )
                    continue
            lease.expires = started + lease_secs
            renewed += 1
        return renewed

    # -- closing ------------------------------------------------------------

    def release_buffered(self, queue: str | None = None) -> int:
        """Release the leases of the tasks buffered but not yet delivered.

        Other consumers can lease them at once. Safe to call from another
        thread than the consuming one. Returns how many were released.

        Parameters:
            queue: only the tasks buffered for this kombu queue; default all.
        """
        taken: list[Lease] = []
        buffers = list(self._buffers.values()) if queue is None else [self._buffers.get(queue, ())]
        for buffer in buffers:
            while buffer:
                try:
                    taken.append(buffer.popleft())
                except IndexError:  # the consuming thread took the last one
                    break
        return self._release(taken, "buffered")

    def close(self) -> None:
        """Release every lease this channel holds, then close."""
        if self.closed:
            return super().close()
        self._keeper_stop.set()
        try:
            super().close()
        finally:
            self.release_buffered()

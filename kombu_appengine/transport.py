"""App Engine pull queue transport for kombu: ``kombu_appengine:Transport``.

Pull queues are worked through the Task Queue REST API (v1beta2), on
Google's service or on an emulator (:mod:`kombu_appengine.emulator`).

Features
========
* Type: Virtual
* Supports Direct: Yes
* Supports Topic: Yes (routed locally, as every virtual transport does)
* Supports Fanout: No (so no remote control, ``celery inspect`` or events)
* Supports Priority: No
* Supports TTL: No

How kombu maps onto the API
===========================
* publish (``_put``): ``tasks.insert`` of the message, as kombu's JSON
  envelope so headers and properties survive (or only the body, with
  ``message_format="raw"``). The task name is chosen by the client, so a
  retried insert never makes a copy.
* get (``_get``): the next task of a local buffer, refilled by one
  ``tasks.lease`` of up to ``num_tasks`` tasks. The buffer hands tasks out in
  lease order and never hands out one whose lease has less than half of
  ``lease_secs`` left: such a task is dropped and comes back through the
  queue. Every delivery has a fresh delivery tag; ``redelivered`` is true
  when the task had been leased before.
* ack: ``tasks.delete``.
* reject with ``requeue=True``, and the restore of unacknowledged messages
  when a channel closes: the lease is released (``newLeaseSeconds=0``; at
  close, one batch call per queue) so the task can be leased again at once.
  A copy is never inserted. A release that fails loses nothing: the task
  comes back when its lease ends.
* reject with ``requeue=False``: ``tasks.delete``.
* Closing a channel also releases the leases of the tasks still buffered.
* Every lease change (renew, release, retry later) names the lease it
  means, by the ``leaseTimestamp`` the service last reported for it: once a
  lease ran out and another consumer leased the task, the change is refused
  (400) instead of giving back, or cutting short, the other consumer's lease.
* While a delivered message is unacknowledged and its channel is open, a
  background thread extends its lease: every ``lease_secs / 4`` seconds it
  renews, to ``lease_secs``, each lease with less than ``lease_secs / 2``
  left. A consumer that dies stops renewing, so its tasks come back within
  ``lease_secs``.
* queue size: ``taskqueues.get`` with stats (``totalTasks``: leased tasks
  count too; for a queue on ``shared_queue``, its tagged tasks among the
  first hundred listed). purge: ``tasks.list`` and ``tasks.delete`` until the
  queue is empty, tasks other consumers hold included (for a queue on
  ``shared_queue``, its tagged tasks, also found by leasing the tag);
  returns how many were deleted.

Queues
======
A kombu queue is the pull queue named by :func:`kombu_appengine.names.pull_queue_name`
(characters outside ``a-z A-Z 0-9 -`` become ``-``). Pull queues cannot be
created through the API; they are declared in ``queue.yaml``. A kombu queue
with no pull queue of its own lives on ``shared_queue``, as tasks tagged with
its name (leased with ``groupByTag``). With neither, declaring the queue
raises :class:`~kombu_appengine.errors.QueueNotFound` naming the queue and
the project.

Messages not published by kombu (a raw payload inserted by App Engine code
or any REST client) are delivered with the payload bytes as ``body``, and
content type ``application/json`` when the payload is JSON, so
``json.loads(message.body)`` and ``message.decode()`` both work.

Connection
==========
``appengine://PROJECT`` (after ``import kombu_appengine``), or
``transport="kombu_appengine:Transport"`` with ``project_name``:

.. code-block:: python

    from kombu import Connection

    # The real service:
    Connection(transport="kombu_appengine:Transport", transport_options={
        "project_name": "my-app", "hrd_project": True,
        "credentials_file": "credentials",  # from pullqueue_authenticate
    })

    # An emulator:
    Connection(transport="kombu_appengine:Transport",
               transport_options={"api_endpoint": "http://127.0.0.1:8123"})

``TASKQUEUE_EMULATOR_HOST=host:port`` in the environment points every
connection at an emulator, with no credentials.

Transport Options
=================
* ``project_name``: (str) the App Engine application id. Required unless
  talking to an emulator (where it defaults to ``"emulator"``).
* ``hrd_project``: (bool) send the project as ``s~{project_name}``. Default
  ``False``.
* ``credentials``: a ready credentials object (google-auth or oauth2client).
* ``credentials_storage``: an object whose ``.get()`` returns credentials,
  e.g. ``oauth2client.file.Storage("credentials")``.
* ``credentials_file``: (str) path of a file written by
  ``pullqueue_authenticate``, a service-account key, an authorized-user
  file, or any other kind google-auth loads (an external account of
  workload identity federation, an impersonated service account). With no
  credentials option and no emulator, Application Default Credentials are
  used.
* ``num_tasks``: (int, 1..1000) how many tasks one lease asks for: the size
  of the local buffer. Default ``10``. With a prefetch limit (Celery's
  ``worker_prefetch_multiplier``) a lease never asks for more than the
  limit allows. Each lease counts toward a queue's ``task_retry_limit``, so
  keep ``num_tasks`` small enough that a buffer is consumed within
  ``lease_secs / 2``.
* ``lease_secs``: (int, 1..604800, one week) lease length in seconds. Default ``60``:
  a consumer that dies gives its tasks back within a minute.
* ``polling_interval``: (float) seconds to wait after a lease that found
  nothing. Default ``1.0`` (the service refused more than about ten lease
  calls a second per queue).
* ``api_endpoint``: (str) base URL of another server speaking this API, e.g.
  ``http://127.0.0.1:8123``; no credentials are sent to it unless given.
* ``shared_queue``: (str) a pull queue that holds, as tagged tasks, every
  kombu queue that has no pull queue of its own (Celery's reply queues,
  say). Default: none.
* ``message_format``: ``"kombu"`` (default: kombu's JSON envelope) or
  ``"raw"`` (only the body, for queues whose consumers are not kombu).
* ``max_retries``: (int) retries of a request that failed transiently (5xx,
  429, rate-limit 403, connection errors), with exponential backoff from
  0.1 s. Default ``5``. After the last, kombu sees a connection error.

Any other option is ignored, with an
:class:`~kombu_appengine.errors.UnknownTransportOptionWarning` (a
``UserWarning``) that names it and the nearest option of this transport:
``visibility_timeout`` (SQS, Redis) and ``ack_deadline_seconds`` (Pub/Sub)
are ``lease_secs`` here, ``bulk_max_messages`` (Pub/Sub) is ``num_tasks``,
``project_id`` (Pub/Sub) is ``project_name``, and a typo such as
``num_task`` gets ``num_tasks``. The options kombu itself puts in or reads
from every transport's options (the reconnection and publish retry settings
``interval_start``, ``interval_step``, ``interval_max``,
``connect_retries_timeout``, ``errback``, ``callback``, and the virtual
channel's ``body_encoding`` and ``deadletter_queue``) are not warned about.
"""

from __future__ import annotations

import base64
import collections
import difflib
import json
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from queue import Empty
from typing import Any

import googleapiclient
from kombu.transport import virtual

from . import api
from .api import GOOGLE_ROOT_URL, MAX_TAG_BYTES
from .client import TaskQueueClient, emulator_root_url, root_url_of
from .credentials import load_credentials
from .errors import (
    ConfigurationError,
    LeaseLost,
    QueueNotFound,
    TaskQueueChannelError,
    TaskQueueConnectionError,
    UnknownTransportOptionWarning,
)
from .names import pull_queue_name

logger = logging.getLogger(__name__)

#: Project id used with an emulator when ``project_name`` is not given.
EMULATOR_PROJECT = "emulator"
#: The message formats ``message_format`` takes.
MESSAGE_FORMATS = ("kombu", "raw")
#: The transport options that choose the credentials (see :mod:`kombu_appengine.credentials`).
CREDENTIALS_OPTIONS = ("credentials", "credentials_storage", "credentials_file")
#: Options kombu itself puts in, or reads from, the transport options of
#: every transport: ``Connection``'s reconnection settings, the retry policy
#: that ``Producer.publish(retry=True)`` copies in (Celery publishes so), and
#: the virtual channel's ``body_encoding`` and ``deadletter_queue``. Never
#: warned about.
KOMBU_OPTIONS = frozenset(
    {
        "max_retries",
        "interval_start",
        "interval_step",
        "interval_max",
        "connect_retries_timeout",
        "errback",
        "callback",
        "on_revive",
        "retry_errors",
        "body_encoding",
        "deadletter_queue",
        "polling_interval",
    }
)
#: Options of kombu's other cloud transports (where they come from) and the
#: option of this one that does their job, for users who bring their settings along.
OTHER_TRANSPORTS_OPTIONS = {
    "visibility_timeout": ("SQS and Redis", "lease_secs"),
    "ack_deadline_seconds": ("Pub/Sub", "lease_secs"),
    "bulk_max_messages": ("Pub/Sub", "num_tasks"),
    "wait_time_seconds": ("SQS and Pub/Sub", "polling_interval"),
    "retry_timeout_seconds": ("Pub/Sub", "max_retries"),
    "project_id": ("Pub/Sub", "project_name"),
    "region": ("SQS", "project_name"),
    "predefined_queues": ("SQS", "shared_queue"),
}
#: Metadata key of a :class:`Settings` field made from transport options not
#: named like the field itself; a field without it is the option of its name.
_FROM_OPTIONS = "from_options"


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return api.parse_bool(value)
        except ValueError:
            pass
    raise ConfigurationError(f"transport option {name} must be true or false, not {value!r}")


def _as_number(name: str, value: Any, kind: type, low: float, high: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or not low <= number <= high:
        raise ConfigurationError(
            f"transport option {name} must be a number from {low} to {high}, not {value!r}"
        )
    return number


def _warn_unknown(options: Iterable[str], known: frozenset[str]) -> None:
    for name in sorted(set(options) - known - KOMBU_OPTIONS):
        if name in OTHER_TRANSPORTS_OPTIONS:
            origin, nearest = OTHER_TRANSPORTS_OPTIONS[name]
            hint = f"an option of kombu's {origin} transports; the nearest here is {nearest!r}"
        else:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the options are {', '.join(sorted(known))}"
        warnings.warn(
            f"kombu_appengine ignores the unknown transport option {name!r}: {hint}",
            UnknownTransportOptionWarning,
            # The user's code is an unknown number of kombu (or Celery) frames
            # up; the message names the option instead of a line.
            stacklevel=1,
        )


@dataclass(frozen=True)
class Settings:
    """The transport options, checked, with their defaults."""

    project: str = field(metadata={_FROM_OPTIONS: ("project_name", "hrd_project")})
    root_url: str = field(metadata={_FROM_OPTIONS: ("api_endpoint",)})
    #: Whether root_url is an emulator (or another server that is not Google's).
    emulated: bool = field(metadata={_FROM_OPTIONS: ()})
    num_tasks: int = 10
    lease_secs: int = 60
    shared_queue: str | None = None
    message_format: str = "kombu"
    max_retries: int = 5
    polling_interval: float = 1.0

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """Every transport option this transport reads: its settings' and the credentials'."""
        own = {name for f in fields(cls) for name in f.metadata.get(_FROM_OPTIONS, (f.name,))}
        return frozenset(own.union(CREDENTIALS_OPTIONS))

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        """Check ``transport_options``.

        An option this transport does not know is ignored, with an
        :class:`~kombu_appengine.errors.UnknownTransportOptionWarning` naming
        the nearest known one; those kombu reads itself (:data:`KOMBU_OPTIONS`)
        are not warned about.

        Raises:
            ConfigurationError: naming the option that is missing or wrong.
        """
        _warn_unknown(options, cls.option_names())
        endpoint = options.get("api_endpoint")
        root_url = root_url_of(endpoint) if endpoint else emulator_root_url()
        emulated = root_url is not None
        project = options.get("project_name")
        if project is None:
            if not emulated:
                raise ConfigurationError(
                    "transport option project_name is required: the App Engine application id "
                    "(or set api_endpoint or TASKQUEUE_EMULATOR_HOST to use an emulator)"
                )
            project = EMULATOR_PROJECT
        if not isinstance(project, str) or not project:
            raise ConfigurationError(
                f"transport option project_name must be a non-empty string, not {project!r}"
            )
        if _as_bool("hrd_project", options.get("hrd_project", False)) and not project.startswith("s~"):
            project = "s~" + project
        message_format = options.get("message_format", "kombu")
        if message_format not in MESSAGE_FORMATS:
            raise ConfigurationError(
                f"transport option message_format must be 'kombu' or 'raw', not {message_format!r}"
            )
        shared = options.get("shared_queue")
        if shared is not None and (not isinstance(shared, str) or not shared):
            raise ConfigurationError(f"transport option shared_queue must be a queue name, not {shared!r}")
        return cls(
            project=project,
            root_url=root_url or GOOGLE_ROOT_URL,
            emulated=emulated,
            num_tasks=_as_number(
                "num_tasks", options.get("num_tasks", cls.num_tasks), int, 1, api.MAX_NUM_TASKS
            ),
            lease_secs=_as_number(
                "lease_secs", options.get("lease_secs", cls.lease_secs), int, 1, api.MAX_LEASE_SECONDS
            ),
            shared_queue=pull_queue_name(shared) if shared else None,
            message_format=message_format,
            max_retries=_as_number("max_retries", options.get("max_retries", cls.max_retries), int, 0, 100),
            polling_interval=_as_number(
                "polling_interval", options.get("polling_interval", cls.polling_interval), float, 0, 3600
            ),
        )


@dataclass(frozen=True)
class Route:
    """Where a kombu queue's tasks are: a pull queue, and a tag on it or none."""

    pull_queue: str
    tag: str | None = None


@dataclass
class Lease:
    """A task this channel holds a lease on."""

    route: Route
    task_id: str
    #: When the lease ends, on this process's monotonic clock (conservative:
    #: measured from before the lease was asked for).
    expires: float
    task: dict[str, Any]
    lost: bool = False
    #: The process that leased it: only that one gives it back on close
    #: (a forked child closing what it inherited must not).
    pid: int = field(default_factory=os.getpid)

    @property
    def lease_timestamp(self) -> str | None:
        """The lease as the service last reported it: every change names it, so that once
        it ran out, the change cannot touch the lease of whoever leased the task next."""
        return _current_lease(self.task)


def _current_lease(task: Mapping[str, Any]) -> str | None:
    """A task's ``leaseTimestamp`` as the service reported it; ``None`` when not leased."""
    stamp = task.get("leaseTimestamp")
    return None if stamp in (None, "", "0", 0) else str(stamp)


def _payload_of(task: Mapping[str, Any]) -> bytes:
    """A leased task's payload; text that is not base64 is taken as it is, never dropped."""
    text = task.get("payloadBase64", "")
    if not isinstance(text, str):
        return b""
    try:
        return api.decode_payload(text)
    except ValueError:
        return text.encode("utf-8", "replace")


#: Keys of every message kombu prepares (``Channel.prepare_message``).
ENVELOPE_KEYS = frozenset({"body", "content-encoding", "content-type", "headers", "properties"})


def _is_envelope(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and document.keys() >= ENVELOPE_KEYS
        and isinstance(document["properties"], dict)
    )


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
        payload = _payload_of(lease.task)
        document: Any = None
        try:
            document = json.loads(payload)
            is_json = True
        except (ValueError, UnicodeDecodeError):
            is_json = False
        if _is_envelope(document):
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
                self.client.change_lease(
                    lease.route.pull_queue, lease.task_id, seconds, lease.lease_timestamp
                )
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
                payload = _payload_of(lease.task)
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
        by_queue: dict[str, dict[str, str | None]] = collections.defaultdict(dict)
        for lease in leases:
            if lease is not None and lease.pid == os.getpid():
                by_queue[lease.route.pull_queue][lease.task_id] = lease.lease_timestamp
        released = 0
        for pull_queue, stamps in by_queue.items():
            names = list(stamps)
            try:
                self.client.release_many(pull_queue, names, stamps)
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
            self.client.release(lease.route.pull_queue, lease.task_id, lease.lease_timestamp)

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
                    renewed_task = self._renew(lease, lease_secs)
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
                lease.task["leaseTimestamp"] = renewed_task.get("leaseTimestamp")
            lease.expires = started + lease_secs
            renewed += 1
        return renewed

    def _renew(self, lease: Lease, seconds: int) -> dict[str, Any]:
        """Renew a lease; the task as the service answers it.

        The renewal names the lease it renews. When its answer is lost, it
        is sent again still naming the lease as it was, and refused; the
        lease is ours all the same if no lease was granted since (the task's
        ``retry_count`` is ours).

        Raises:
            TaskQueueChannelError: the lease is not ours any more (or the task is gone).
        """
        queue = lease.route.pull_queue
        try:
            return self.client.change_lease(queue, lease.task_id, seconds, lease.lease_timestamp)
        except LeaseLost:
            task = self.client.get_task(queue, lease.task_id)
            if task.get("retry_count") != lease.task.get("retry_count") or _current_lease(task) is None:
                raise
            return task

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


class Transport(virtual.Transport):
    """kombu transport for App Engine pull queues; see the module's manual."""

    Channel = Channel

    polling_interval = 1.0
    default_port = None
    driver_type = "appengine"
    driver_name = "googleapiclient"

    connection_errors: tuple[Any, ...] = (*virtual.Transport.connection_errors, TaskQueueConnectionError)
    channel_errors: tuple[Any, ...] = (*virtual.Transport.channel_errors, TaskQueueChannelError)
    #: Without this attribute ``Connection.ensure`` gives up at the second
    #: connection error; reconnecting here does no I/O, so the server may
    #: well still be down after a "successful" reconnect.
    recoverable_connection_errors = connection_errors

    implements = virtual.Transport.implements.extend(
        exchange_type=frozenset(["direct", "topic"]),
    )

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = dict(client.transport_options)
        # appengine://my-app names the project in the URL.
        if options.get("project_name") is None and client.hostname not in (None, "", "localhost"):
            options["project_name"] = client.hostname
        self.settings = Settings.from_options(options)
        self.polling_interval = self.settings.polling_interval
        credentials = None
        if not self.settings.emulated or any(options.get(key) is not None for key in CREDENTIALS_OPTIONS):
            credentials = load_credentials(
                options.get("credentials"),
                options.get("credentials_storage"),
                options.get("credentials_file"),
            )
        self.client_for_channels = TaskQueueClient(
            self.settings.project, self.settings.root_url, credentials, max_retries=self.settings.max_retries
        )

    @property
    def default_connection_params(self) -> dict[str, Any]:
        """No host or port: the endpoint comes from the transport options."""
        return {"port": None}

    def driver_version(self) -> str:
        """google-api-python-client's version."""
        return googleapiclient.__version__

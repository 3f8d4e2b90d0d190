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
* connect: one ``taskqueues.get`` tells whether the service can be reached
  (waiting at most kombu's ``connect_timeout`` for its answer),
  so ``Connection.connect()``, ``ensure_connection`` and Celery's "Cannot
  connect to broker, retrying" hear of an unreachable endpoint at once.
* publish (``_put``): ``tasks.insert`` of the message, as kombu's JSON
  envelope so headers and properties survive (or only the body, with
  ``message_format="raw"``). The task name is chosen by the client, so a
  retried insert never makes a copy.
* get (``_get``): the next task of a local buffer, refilled by
  ``tasks.lease`` of up to ``num_tasks`` tasks. A queue's first lease asks
  for one task, and each lease that comes back full doubles the next, up
  to ``num_tasks`` (every lease counts toward ``task_retry_limit``, and a
  connection that takes one message and closes must not spend a lease on
  others). Once at ``num_tasks``, the next lease is asked for in the
  background when half the buffer is left (not with ``num_tasks=1``, nor
  after a lease that came back short), so a consumer seldom waits for a
  round trip. A get never waits longer for a lease than the timeout of
  ``drain_events``. With a prefetch limit, buffered tasks and leases on
  their way count against it, whatever their queue. Every delivery has a
  fresh delivery tag; ``redelivered`` is true when the task had been
  leased before.
* ack, and reject with ``requeue=False``: ``tasks.delete``, sent in batch
  calls (once ``ack_batch_size`` are waiting, or the oldest has waited
  ``ack_flush_interval`` seconds, before ``_size`` and ``_purge``, and at
  close; a batch takes every ack waiting). The prefetch
  slot is free at once. A process that dies between an ack and its batch
  loses nothing: the task comes back when its lease ends, and runs again
  (at least once, never lost).
* reject with ``requeue=True``, and the restore of unacknowledged messages
  when a channel closes: the lease is released (``newLeaseSeconds=0``), in
  batch calls too, so the task can be leased again at once. A copy is never
  inserted. A release that fails loses nothing: the task comes back when
  its lease ends.
* Cancelling the last consumer of a queue, and closing a channel, release
  the leases of the tasks still buffered; the queue's next lease asks for
  one task again. Closing waits at most ``lease_secs`` for the service.
* An acknowledged task keeps its lease, renewed, until the service has
  confirmed its delete: an ack that waits behind a slow call never lets
  another consumer run the task. A forked child may ack or reject the
  messages its parent received.
* The lease book (:mod:`kombu_appengine.transport.leases`) keeps every
  lease the channel holds, buffered and delivered alike, with its
  ``leaseTimestamp``: a background thread renews, to ``lease_secs``, each
  lease with less than ``lease_secs / 2`` left, in one batch call per queue,
  so a buffered task costs no second lease against ``task_retry_limit``
  while the connection is open. Closing gives buffered tasks back having
  spent one lease each: at most the last lease's tasks, and no more than
  the connection has delivered (leases grow as it takes messages). Every
  renewal and release carries the lease it changes: the service refuses
  it when the lease ran out and another consumer may hold the task, and
  the book never touches that lease again. A consumer that dies stops
  renewing, so its tasks come back within ``lease_secs``. Acks and gets
  never wait for the book's HTTP calls, and acks never wait behind a
  renewal (nor renewals behind acks): each has its own thread.
* An acknowledged task whose lease was lost is deleted only if no other
  consumer holds it now (one ``tasks.get`` tells): otherwise that consumer
  runs it again and deletes it. ``tasks.delete`` takes no lease, so this is
  as far as a client can tell.
* queue size: ``taskqueues.get`` with stats (``totalTasks``: leased tasks
  count too; for a queue on ``shared_queue``, its tagged tasks among the
  first hundred listed).
* purge: the ready tasks, as kombu's purge removes ready messages only:
  those buffered here, and those no consumer holds (found by leasing them,
  by tag for a queue on ``shared_queue``); returns how many were deleted.
* delete (``queue_delete``): a queue on ``shared_queue`` is its tagged
  tasks, and they are all deleted with it, held ones included. A pull
  queue cannot be deleted through the API: its tasks stay.

Queues
======
A kombu queue is the pull queue named by :func:`kombu_appengine.names.pull_queue_name`
(characters outside ``a-z A-Z 0-9 -`` become ``-``). Pull queues cannot be
created through the API; they are declared in ``queue.yaml``. A kombu queue
with no pull queue of its own lives on ``shared_queue``, as tasks tagged with
its name (leased with ``groupByTag``). The shared queue holds tagged tasks
only: a kombu queue whose own pull queue is the shared queue is a tag there
too (untagged tasks other producers put on it are not delivered). With
neither, declaring the queue raises
:class:`~kombu_appengine.errors.QueueNotFound` naming the queue and the
project.

Messages not published by kombu (a raw payload inserted by App Engine code
or any REST client) are delivered with the payload bytes as ``body``, and
content type ``application/json`` when the payload is JSON (in UTF-8, after
a byte order mark, or in UTF-16 or UTF-32, which ``content_encoding``
names), so ``json.loads(message.body)`` and ``message.decode()`` both work.
So is a payload shaped like kombu's envelope that kombu cannot read (its
body not the base64 its ``body_encoding`` says, headers that are not a
mapping ...), with one warning naming the task and the queue: the consumer
gets it, to ack or reject, instead of an error out of ``drain_events``.
A task that still cannot be made a message raises, from ``basic_get``,
:class:`~kombu_appengine.errors.TaskNotDelivered` with the delivery tag its
lease is kept under, for the caller to settle as a message's
(``pullqueue_worker`` fails the task, as if its function had raised).

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
  of the local buffer (up to one and a half times it while the next lease
  is on its way). Default ``10``. With a prefetch limit (Celery's
  ``worker_prefetch_multiplier``) the buffer never holds more than the
  limit allows. Buffered tasks keep their leases (they are renewed), so a
  slow consumer costs no extra lease against ``task_retry_limit``; it does
  keep them from other consumers meanwhile. Leases start at one task and
  double up to ``num_tasks`` (see get, above).
* ``lease_secs``: (int, 1..604800, one week) lease length in seconds. Default ``60``:
  a consumer that dies gives its tasks back within a minute.
* ``polling_interval``: (float) seconds to wait after a lease that found
  nothing. Default ``1.0`` (the service refused more than about ten lease
  calls a second per queue).
* ``api_endpoint``: (str) base URL of another server speaking this API, e.g.
  ``http://127.0.0.1:8123``; no credentials are sent to it unless given.
  Without it, ``TASKQUEUE_EMULATOR_HOST=host:port`` in the environment does
  the same; either is checked at once (http(s), a host, a port from 1 to
  65535, no path but the API's).
* ``shared_queue``: (str) a pull queue that holds, as tagged tasks, every
  kombu queue that has no pull queue of its own (Celery's reply queues,
  say). Default: none.
* ``message_format``: ``"kombu"`` (default: kombu's JSON envelope) or
  ``"raw"`` (only the body, for queues whose consumers are not kombu).
* ``request_retries``: (int, 0..100) retries of a request that failed
  transiently (5xx, 429, rate-limit 403, connection errors, a token endpoint
  failing transiently), with exponential backoff from 0.1 s. Default ``5``.
  After the last, kombu sees a connection error. (Not ``max_retries``: kombu
  keeps its own reconnection setting under that name in the same options,
  and a publish with a retry policy overwrites it.)
* ``ack_batch_size``: (int, 1..1000) how many acknowledgements wait before
  their batch of deletes is sent (it takes every one waiting); releases and
  lease changes are batched the same way. Default ``100``.
* ``ack_flush_interval``: (float, 0..60) longest an acknowledgement (or a
  release) waits for its batch, in seconds. Default ``0.2``. The trade-off:
  a process that dies in that window has its acknowledged tasks redelivered
  (never lost). ``channel.flush()`` sends them at once.

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

from typing import Any

import googleapiclient
from kombu.transport import virtual

from ..client import TaskQueueClient
from ..credentials import load_credentials
from ..errors import TaskQueueChannelError, TaskQueueConnectionError
from .channel import Channel, QoS
from .options import (
    CREDENTIALS_OPTIONS,
    EMULATOR_PROJECT,
    KOMBU_OPTIONS,
    MESSAGE_FORMATS,
    OTHER_TRANSPORTS_OPTIONS,
    Settings,
)
from .routing import Route

__all__ = [
    "CREDENTIALS_OPTIONS",
    "EMULATOR_PROJECT",
    "KOMBU_OPTIONS",
    "MESSAGE_FORMATS",
    "OTHER_TRANSPORTS_OPTIONS",
    "Channel",
    "QoS",
    "Route",
    "Settings",
    "Transport",
]


#: The queue asked about when connecting (without ``shared_queue``): any answer
#: of the service, "no such queue" included, shows it can be reached.
PROBE_QUEUE = "default"


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
    #: connection error.
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
            self.settings.project,
            self.settings.root_url,
            credentials,
            max_retries=self.settings.request_retries,
        )

    def establish_connection(self) -> Any:
        """Connect: one request tells whether the service can be reached.

        kombu's ``Connection.connect()``, ``ensure_connection`` and Celery's
        "Cannot connect to broker, retrying" depend on this: without it,
        an unreachable endpoint would only show at the first lease.

        Raises:
            TaskQueueConnectionError: the service cannot be reached (kombu
                retries, as its connection settings say).
            AuthenticationFailed: the credentials were refused.
        """
        timeout = getattr(self.client, "connect_timeout", None)
        self.client_for_channels.ping(self.settings.shared_queue or PROBE_QUEUE, timeout=timeout)
        return super().establish_connection()

    def close_connection(self, connection: Any) -> None:
        """Close the channels (they give back what they hold), then every HTTP connection."""
        try:
            super().close_connection(connection)
        finally:
            self.client_for_channels.close()

    @property
    def default_connection_params(self) -> dict[str, Any]:
        """No host or port: the endpoint comes from the transport options."""
        return {"port": None}

    def driver_version(self) -> str:
        """google-api-python-client's version."""
        return googleapiclient.__version__

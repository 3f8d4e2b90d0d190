"""The facts of the Task Queue REST API (v1beta2), stated once.

Everything that both sides of the wire must agree on lives here: the client
and the transport import it to stay within the API, and the emulator imports
it to enforce the API. A limit, a name pattern or a path written anywhere
else is a second copy that can drift.

The values come from Google's documentation and discovery document, and from
the App Engine SDK's own task queue stub (see TASKQUEUE_API.md in the
project's design notes). The shipped discovery document
(``taskqueue_v1beta2.json``) holds the same method ids, verbs and paths as
:data:`METHODS`; a test keeps the two in step.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import NamedTuple

# -- where the API lives ------------------------------------------------------

#: The real service's root URL (the discovery document's ``rootUrl``).
GOOGLE_ROOT_URL = "https://www.googleapis.com/"
#: Path of the API below a server's root (``/`` + the document's ``servicePath``).
SERVICE_PATH = "/taskqueue/v1beta2/projects/"
#: Paths of the batch endpoint below the root: discovery revisions gave both.
BATCH_PATHS = ("/batch", "/batch/taskqueue/v1beta2")
#: Path at which a server publishes the discovery document, as Google's
#: discovery service did (``{rootUrl}discovery/v1/apis/taskqueue/v1beta2/rest``).
DISCOVERY_PATH = "/discovery/v1/apis/taskqueue/v1beta2/rest"
#: Environment variable naming an emulator as ``host:port``; it needs no credentials.
EMULATOR_HOST_ENV = "TASKQUEUE_EMULATOR_HOST"

#: OAuth scope for every Task Queue call.
TASKQUEUE_SCOPE = "https://www.googleapis.com/auth/taskqueue"
#: OAuth scope for consuming only (lease, update, delete, get, list).
TASKQUEUE_CONSUMER_SCOPE = "https://www.googleapis.com/auth/taskqueue.consumer"
#: OAuth scope that makes Google's token-info endpoint report a token's email:
#: the gateway needs it to hold the caller to the queue's ACL.
USERINFO_EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
#: The scopes the transport's own credentials ask for (service-account keys, ADC).
CLIENT_SCOPES = (TASKQUEUE_SCOPE, USERINFO_EMAIL_SCOPE)


class Method(NamedTuple):
    """One method of the API, as the discovery document names it."""

    #: The method id (``taskqueue.tasks.lease``): what routing, errors and
    #: fault injection are keyed by.
    id: str
    #: The HTTP verb.
    http_method: str
    #: The path below :data:`SERVICE_PATH`, with ``{parameters}``.
    path: str


TASKQUEUES_GET = Method("taskqueue.taskqueues.get", "GET", "{project}/taskqueues/{taskqueue}")
TASKS_INSERT = Method("taskqueue.tasks.insert", "POST", "{project}/taskqueues/{taskqueue}/tasks")
TASKS_LIST = Method("taskqueue.tasks.list", "GET", "{project}/taskqueues/{taskqueue}/tasks")
TASKS_LEASE = Method("taskqueue.tasks.lease", "POST", "{project}/taskqueues/{taskqueue}/tasks/lease")
TASKS_GET = Method("taskqueue.tasks.get", "GET", "{project}/taskqueues/{taskqueue}/tasks/{task}")
TASKS_DELETE = Method("taskqueue.tasks.delete", "DELETE", "{project}/taskqueues/{taskqueue}/tasks/{task}")
TASKS_UPDATE = Method("taskqueue.tasks.update", "POST", "{project}/taskqueues/{taskqueue}/tasks/{task}")
TASKS_PATCH = Method("taskqueue.tasks.patch", "PATCH", "{project}/taskqueues/{taskqueue}/tasks/{task}")

#: Every method of the API. Where two share a verb and a path shape, the one
#: with the literal segment comes first (``tasks/lease`` before ``tasks/{task}``).
METHODS = (
    TASKQUEUES_GET,
    TASKS_INSERT,
    TASKS_LIST,
    TASKS_LEASE,
    TASKS_GET,
    TASKS_DELETE,
    TASKS_UPDATE,
    TASKS_PATCH,
)

# -- limits -------------------------------------------------------------------

#: Most tasks one lease may ask for (``numTasks``).
MAX_NUM_TASKS = 1000
#: Longest lease, in seconds (one week); also the bound of ``newLeaseSeconds``.
MAX_LEASE_SECONDS = 7 * 24 * 3600
#: Largest decoded task payload, in bytes.
MAX_PAYLOAD_BYTES = 1024 * 1024
#: Total decoded payload one lease returns before it stops adding tasks (it
#: always returns at least one available task, so a short lease is not an
#: empty queue).
MAX_LEASE_BATCH_BYTES = 1024 * 1024
#: Longest tag, in UTF-8 bytes.
MAX_TAG_BYTES = 500
#: Most tasks ``tasks.list`` returns.
MAX_LIST_TASKS = 100
#: Most requests one batch call may carry.
MAX_BATCH_PARTS = 1000
#: Longest queue name.
MAX_QUEUE_NAME = 100
#: How long a deleted task's name stays reserved ("tombstoned"), in seconds.
TOMBSTONE_SECONDS = 7 * 24 * 3600

# -- names --------------------------------------------------------------------

#: Legal task names.
TASK_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,500}\Z")
#: Legal queue names.
QUEUE_NAME_RE = re.compile(rf"[a-zA-Z0-9-]{{1,{MAX_QUEUE_NAME}}}\Z")
#: Every character a queue name may not hold.
QUEUE_NAME_ILLEGAL_RE = re.compile(r"[^a-zA-Z0-9-]")
#: The long form of a task's ``queueName``: ``projects/{project}/taskqueues/{queue}``.
LONG_QUEUE_NAME_RE = re.compile(r"projects/([^/]+)/taskqueues/([^/]+)\Z")
#: Prefixes the service put before an application id (high replication, EU).
PROJECT_PREFIXES = ("s~", "e~")
#: An application id without its prefix: lower-case letters, digits and
#: hyphens, with a domain and ``:`` before it for the oldest (``example.com:my-app``).
PROJECT_ID_RE = re.compile(r"[a-z0-9](?:[a-z0-9.:-]{0,98}[a-z0-9])?\Z")


def bare_project(project: str) -> str:
    """The application id without its ``s~`` or ``e~`` prefix.

    Parameters:
        project: an application id as a URL or ``queueName`` carries it.

    Returns:
        The id that ``my-app``, ``s~my-app`` and ``e~my-app`` all name.
    """
    for prefix in PROJECT_PREFIXES:
        if project.startswith(prefix):
            return project[len(prefix) :]
    return project


def long_queue_name(project: str, queue: str) -> str:
    """The long form of ``queueName`` that the service put in its answers."""
    return f"projects/{project}/taskqueues/{queue}"


# -- resources ----------------------------------------------------------------

#: ``kind`` of a task.
TASK_KIND = "taskqueues#task"
#: ``kind`` of a lease's answer (singular ``taskqueue``, as the service sent it).
LEASED_TASKS_KIND = "taskqueue#tasks"
#: ``kind`` of a list's answer.
LISTED_TASKS_KIND = "taskqueues#tasks"
#: ``kind`` of a queue.
QUEUE_KIND = "taskqueues#taskqueue"
#: Reasons of 403 answers that are rate limits, hence worth retrying.
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})

_URL_SAFE_TO_STANDARD = str.maketrans("-_", "+/")


def encode_payload(payload: bytes) -> str:
    """``payloadBase64`` for ``payload``: standard, padded base64, as the service sent it."""
    return base64.b64encode(payload).decode("ascii")


def decode_payload(text: str) -> bytes:
    """The bytes of a ``payloadBase64``.

    The service accepted standard and URL-safe base64, with or without
    padding; whitespace is ignored.

    Raises:
        ValueError: ``text`` is not base64.
    """
    compact = "".join(text.split()).translate(_URL_SAFE_TO_STANDARD)
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except binascii.Error as error:
        raise ValueError(f"not valid base64: {error}") from None


def parse_bool(text: str) -> bool:
    """A boolean as the API's query parameters spell it: ``true`` or ``false``.

    Case does not matter; ``1`` and ``0`` are accepted too.

    Raises:
        ValueError: for anything else.
    """
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValueError(f"expected true or false, not {text!r}")

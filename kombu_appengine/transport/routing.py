"""Where a kombu queue's tasks live: its own pull queue, or a tag on ``shared_queue``.

A kombu queue uses the pull queue its name translates to
(:func:`kombu_appengine.names.pull_queue_name`). One without a pull queue of
its own lives on ``shared_queue``, as tasks tagged with its name. The shared
queue holds tagged tasks only: a kombu queue whose own pull queue *is* the
shared queue is a tag there too, so that its consumer never leases, and its
purge never deletes, the tasks of the queues living beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api import MAX_TAG_BYTES
from ..client import TaskQueueClient
from ..errors import QueueNotFound, TaskQueueChannelError
from ..names import pull_queue_name


@dataclass(frozen=True)
class Route:
    """Where a kombu queue's tasks are: a pull queue, and a tag on it or none."""

    pull_queue: str
    tag: str | None = None


def route_of(client: TaskQueueClient, queue: str, shared_queue: str | None) -> Route:
    """Find where the kombu queue ``queue`` lives (one ``taskqueues.get``, two at most).

    Raises:
        QueueNotFound: neither its own pull queue nor ``shared_queue``
            exists; the message names the queue and the project and says
            how to declare it.
        TaskQueueChannelError: its name is too long to be a tag.
    """
    pull = pull_queue_name(queue)
    project = client.project
    if pull != shared_queue:
        try:
            client.get_queue(pull)
            return Route(pull)
        except QueueNotFound:
            if shared_queue is None:
                raise QueueNotFound(
                    f"kombu queue {queue!r} has no pull queue {pull!r} in project "
                    f"{project!r}: declare it in queue.yaml with 'mode: pull', "
                    "or set the transport option shared_queue to a pull queue that can hold it"
                ) from None
    assert shared_queue is not None  # it is pull, or the pull queue is missing and shared_queue is set
    if len(queue.encode("utf-8")) > MAX_TAG_BYTES:
        raise TaskQueueChannelError(
            f"kombu queue name {queue[:60]!r}... is over {MAX_TAG_BYTES} bytes: "
            "too long to be a tag on shared_queue"
        )
    try:
        client.get_queue(shared_queue)
    except QueueNotFound:
        raise QueueNotFound(
            f"kombu queue {queue!r} has no pull queue of its own, and the shared_queue "
            f"{shared_queue!r} does not exist in project {project!r} either: "
            "declare it in queue.yaml with 'mode: pull'"
        ) from None
    return Route(shared_queue, queue)

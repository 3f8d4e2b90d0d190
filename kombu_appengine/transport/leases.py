"""The lease book: every lease a channel holds, and all the work on them.

A task a channel leased is in its book from the lease until the service was
told what became of it. Each entry keeps the task's ``leaseTimestamp`` as the
service reported it, and every change of the lease sends it back: the
service refuses a change to a lease that is no longer ours (it ran out and
another consumer may hold the task now). Such a lease is *lost*, and the
book never changes it again.

A lease is in one of these states:

* buffered: leased, waiting in the channel's buffer for a ``get``;
* delivered: handed to kombu, not yet acknowledged;
* releasing: to be given back (a requeue, the restore at close) or postponed
  (``retry_later``);
* deleting: acknowledged or rejected, to be deleted;
* lost: the service said it is not ours, or it ran out before a renewal.

Buffered and delivered leases alike are renewed before they run out, so a
task waiting in the buffer costs no second lease (each counts toward
``task_retry_limit``) while the channel is open. Three background threads
do the HTTP work, and none holds the book's lock while it waits for the
network, so acks, rejects and gets never wait behind a slow or failing
call, and neither do the threads' jobs wait behind one another:

* the *settler* sends deletes, releases and lease changes in batch calls
  (by count, by age, before ``_size`` and ``_purge``, and at close);
* the *renewer* renews the leases that are due, one batch call per pull
  queue (a lease being renewed is released only once the renewal answered,
  with the lease it gave);
* the *leaser* sends ``tasks.lease``, the next one before the buffer runs dry.

An acknowledged task is deleted by its name, which needs no lease. When its
lease was lost, or ran out, another consumer may hold the task now: the book
then asks for the task first and deletes it only if it is not leased or is
still leased to us. Otherwise the holder runs it again and deletes it: a
task may run twice (at least once), and a consumer never deletes a task
another one holds, as far as the API lets a client tell.
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
import multiprocessing.util
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable

from ..client import TaskQueueClient
from ..errors import LeaseLost, TaskNotFound, TaskQueueError
from .options import Settings
from .routing import Route

logger = logging.getLogger(__name__)

#: Longest pause, in seconds, before the settler or the renewer tries again after a call failed.
RETRY_PAUSE = 1.0


class State(enum.Enum):
    """Where a lease is in its life (see the module's description)."""

    BUFFERED = "buffered"
    DELIVERED = "delivered"
    RELEASING = "releasing"
    DELETING = "deleting"
    LOST = "lost"


@dataclass(eq=False)
class Lease:
    """A task this channel holds a lease on."""

    route: Route
    task_id: str
    #: The task as leased: payload, ``retry_count``, tag.
    task: dict[str, Any]
    #: The lease as the service reported it; sent back with every change.
    lease_timestamp: str | None
    #: When the lease ends, on :func:`time.monotonic`'s clock, at the earliest
    #: (measured from before the request that set it).
    expires: float
    #: When it ends at the latest (measured from the answer): past this, it
    #: is certainly not ours any more.
    ends_by: float
    #: The kombu queue it was leased for.
    queue: str
    state: State = State.BUFFERED
    #: Seconds the lease is set to when releasing: 0 gives the task back now.
    new_lease_seconds: int = 0
    #: When it was acknowledged or given back, on the monotonic clock.
    settled_at: float = 0.0
    #: Whether a renewal of it is on its way (a change waits for its answer).
    renewing: bool = False


@dataclass(eq=False)
class LeaseRequest:
    """A ``tasks.lease`` asked of the leaser."""

    queue: str
    route: Route
    count: int
    #: Retries stop at this monotonic time (the deadline of the ``get`` waiting for it).
    deadline: float | None
    #: Whether a ``get`` waits for it (then its failure is raised there).
    awaited: bool
    #: What the leased tasks are for: ``"deliver"``, ``"release"`` (no one
    #: takes them any more) or ``"delete"`` (purged while on the way).
    fate: str = "deliver"


@dataclass
class _Settling:
    """What one round of the settler sends."""

    deletes: list[Lease]
    changes: list[Lease]


def leases_needed(messages: int, num_tasks: int) -> int:
    """How many leases one consumer needs to take ``messages`` from a full queue.

    A queue's leases ask for 1, 2, 4 ... tasks, then ``num_tasks`` each
    (see :meth:`LeaseBook._room`).
    """
    leases, window = 0, 1
    while messages > 0:
        leases += 1
        messages -= min(window, num_tasks)
        window *= 2
    return leases


def _by_queue(
    leases: Iterable[Lease], key: Callable[[Lease], Any] = lambda lease: None
) -> dict[Any, list[Lease]]:
    """Leases grouped by pull queue (and ``key``): one batch call each."""
    groups: dict[Any, list[Lease]] = collections.defaultdict(list)
    for lease in leases:
        groups[(lease.route.pull_queue, key(lease))].append(lease)
    return groups


class LeaseBook:
    """The leases of one channel; see the module's description.

    Parameters:
        client: talks to the service.
        settings: the transport's options (``num_tasks``, ``lease_secs``,
            ``ack_batch_size``, ``ack_flush_interval``).
        name: names the background threads.
    """

    def __init__(self, client: TaskQueueClient, settings: Settings, name: str) -> None:
        self.client = client
        self.settings = settings
        self.name = name
        self._start_empty()

    def _start_empty(self) -> None:
        self._lock = threading.Lock()
        #: The settler and the renewer wait on it for work.
        self._work_ready = threading.Condition(self._lock)
        #: Gets wait on it for leases; flushes for rounds of the settler.
        self._progress = threading.Condition(self._lock)
        self._buffers: dict[str, collections.deque[Lease]] = collections.defaultdict(collections.deque)
        self._delivered: dict[str, Lease] = {}
        #: What the parent process had delivered when this one was forked:
        #: acked or rejected here, never renewed nor given back at a close.
        self._inherited: dict[str, Lease] = {}
        self._deletes: list[Lease] = []
        #: Deletes the settler is sending: their leases are kept until the answer.
        self._deletes_on_the_way: list[Lease] = []
        self._changes: list[Lease] = []
        #: The lease request of each kombu queue, on its way or waiting for the leaser.
        self._requests: dict[str, LeaseRequest] = {}
        self._waiting: collections.deque[LeaseRequest] = collections.deque()
        self._errors: dict[str, Exception] = {}
        #: Kombu queues whose last lease came back short: none is asked ahead.
        self._drained: set[str] = set()
        #: How many tasks the next lease of each kombu queue may ask for (see :meth:`_room`).
        self._windows: dict[str, int] = {}
        #: Rounds of the settler, and the round a flush waits for.
        self._rounds_started = 0
        self._rounds_done = 0
        self._forced = 0
        #: After a failed call, each thread waits until then (unless flushed).
        self._settle_pause = 0.0
        self._renew_pause = 0.0
        self._closing = False
        self._stopped = False
        self._settler: threading.Thread | None = None
        self._renewer: threading.Thread | None = None
        self._leaser: threading.Thread | None = None
        self._at_exit: multiprocessing.util.Finalize | None = None

    def reset_after_fork(self) -> None:
        """In a child process: forget every lease (the parent holds them) and every thread.

        The messages the parent had delivered may be acknowledged or
        rejected here (a child that processes them); nothing else is done
        to their leases here.
        """
        if self._at_exit is not None:
            self._at_exit.cancel()
        inherited = {**self._inherited, **self._delivered}
        self._start_empty()
        self._inherited = inherited

    # -- leasing --------------------------------------------------------------

    def get(
        self, queue: str, route: Route, room: int | None, deadline: float | None, delivery_tag: str
    ) -> Lease | None:
        """The next lease to deliver for the kombu queue ``queue``, leasing as needed.

        Parameters:
            route: where the queue's tasks are.
            room: how many more messages kombu's prefetch limit allows, or
                ``None`` for no limit. Buffered tasks and leases on their way
                count against it, whatever their queue.
            deadline: wait no longer than this monotonic time; ``None``
                waits for the lease's answer.
            delivery_tag: the delivery tag the lease is filed under when
                delivered.

        Returns:
            The lease, now delivered; ``None`` when the queue has nothing now
            (a lease found nothing, the prefetch limit leaves no room, or
            the deadline came).

        Raises:
            TaskQueueError: the lease that this get waited for failed.
        """
        with self._lock:
            sent = False
            while True:
                lease = self._pop_fresh(queue)
                if lease is not None:
                    self._delivered[delivery_tag] = lease
                    self._lease_ahead(queue, route, None if room is None else room - 1)
                    return lease
                error = self._errors.pop(queue, None)
                if error is not None:
                    raise error
                request = self._requests.get(queue)
                if request is None:
                    # A lease asked ahead, before this get, that found nothing
                    # says nothing of what was put since: only our own does.
                    count = 0 if sent or self._closing else self._room(queue, room)
                    if count < 1 or (deadline is not None and deadline <= time.monotonic()):
                        # A lease sent after the deadline would only be
                        # given back unused, having spent a lease.
                        return None
                    request = self._ask(queue, route, count, deadline, awaited=True)
                    sent = True
                elif any(self._buffers.values()):
                    # Another queue has tasks ready: no need to wait here.
                    return None
                request.awaited = True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._progress.wait(remaining)

    def _room(self, queue: str, room: int | None) -> int:
        """How many tasks a lease for ``queue`` may ask for now.

        A queue's first lease asks for one task, and each lease that comes
        back full doubles the next one, up to ``num_tasks``. Every lease
        counts toward ``task_retry_limit``, and what a connection closes
        with undelivered is given back having spent one: a consumer that
        takes one message and closes (``SimpleQueue.get``, a script run
        from cron) must not spend a lease on nine others each time.
        """
        window = self._windows.get(queue, 1)
        if room is None:
            return window
        held = sum(map(len, self._buffers.values())) + sum(r.count for r in self._requests.values())
        return min(window, room - held)

    def _lease_ahead(self, queue: str, route: Route, room: int | None) -> None:
        """Ask for the next lease once half the buffer is left, so a get seldom waits.

        Not with ``num_tasks=1`` (that asks for one task at a time), not
        before the queue's leases have grown to ``num_tasks`` (a consumer
        that has taken few messages may be about to close), nor when the
        last lease brought fewer tasks than it asked for (the queue has run
        dry: the next lease waits for the buffer to be empty).
        """
        num_tasks = self.settings.num_tasks
        if num_tasks < 2 or self._closing or queue in self._requests or queue in self._drained:
            return
        if self._windows.get(queue, 1) < num_tasks or len(self._buffers[queue]) > num_tasks // 2:
            return
        count = self._room(queue, room)
        if count >= 1:
            self._ask(queue, route, count, None, awaited=False)

    def _ask(
        self, queue: str, route: Route, count: int, deadline: float | None, awaited: bool
    ) -> LeaseRequest:
        request = LeaseRequest(queue, route, count, deadline, awaited)
        self._requests[queue] = request
        self._waiting.append(request)
        self._work_ready.notify_all()
        if self._leaser is None or not self._leaser.is_alive():
            self._leaser = self._thread(self._lease_loop, "leaser")
        return request

    def _pop_fresh(self, queue: str) -> Lease | None:
        buffer = self._buffers.get(queue)
        now = time.monotonic()
        while buffer:
            lease = buffer.popleft()
            if lease.expires > now:
                lease.state = State.DELIVERED
                return lease
            # Renewals failed until the lease ran out: another consumer may
            # have the task already.
            lease.state = State.LOST
            logger.debug("buffered task %s lost its lease before it was delivered", lease.task_id)
        return None

    def _lease_loop(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._waiting and not self._closing:
                        self._work_ready.wait()
                    if not self._waiting:
                        return
                    request = self._waiting.popleft()
                self._lease(request)
        finally:
            self.client.close_thread()

    def _lease(self, request: LeaseRequest) -> None:
        """Send one lease request, and file what it brought."""
        lease_secs = self.settings.lease_secs
        route = request.route
        started = time.monotonic()
        tasks: list[dict[str, Any]] = []
        failure: Exception | None = None
        try:
            tasks = self.client.lease(
                route.pull_queue, request.count, lease_secs, tag=route.tag, deadline=request.deadline
            )
        except TaskQueueError as error:
            failure = error
        except Exception as error:  # a get waits for this request: it must always end
            logger.exception("leasing from queue %r failed", route.pull_queue)
            failure = error
        answered = time.monotonic()
        with self._lock:
            if self._requests.get(request.queue) is request:
                del self._requests[request.queue]
            leases = [
                Lease(
                    route,
                    task["id"],
                    task,
                    task.get("leaseTimestamp"),
                    started + lease_secs,
                    answered + lease_secs,
                    request.queue,
                )
                for task in tasks
            ]
            if request.fate == "deliver" and self._closing:
                request.fate = "release"
            if request.fate == "release":
                for lease in leases:
                    self._give_back(lease, 0)
                self._forced = max(self._forced, self._rounds_started + 1)
            elif request.fate == "delete":
                for lease in leases:
                    self._delete(lease)
            elif leases:
                self._buffers[request.queue].extend(leases)
                self._start_threads()  # to renew them
            if failure is None and len(leases) < request.count:
                self._drained.add(request.queue)
            else:
                self._drained.discard(request.queue)
            if request.fate == "deliver" and failure is None and len(leases) >= request.count:
                window = self._windows.get(request.queue, 1)
                self._windows[request.queue] = min(self.settings.num_tasks, 2 * window)
            if failure is not None:
                if request.awaited:
                    self._errors[request.queue] = failure
                else:
                    logger.warning("could not lease ahead from queue %r: %s", route.pull_queue, failure)
            self._progress.notify_all()
            self._work_ready.notify_all()

    # -- what kombu does with a delivered message -----------------------------

    def lease_of(self, delivery_tag: str) -> Lease | None:
        """The lease of a delivered, unsettled message."""
        with self._lock:
            return self._delivered.get(delivery_tag) or self._inherited.get(delivery_tag)

    def _settle_delivered(self, delivery_tag: str, inherited: bool = True) -> Lease | None:
        """Take a delivered message's lease out of the book (or one a parent delivered, if ``inherited``)."""
        lease = self._delivered.pop(delivery_tag, None)
        if lease is None and inherited:
            lease = self._inherited.pop(delivery_tag, None)
        return lease

    def ack(self, delivery_tag: str) -> None:
        """The message was acknowledged or rejected: its task is to be deleted (in a batch)."""
        with self._lock:
            lease = self._settle_delivered(delivery_tag)
            if lease is not None:
                self._delete(lease)
            elif self._stopped:
                logger.warning(
                    "message %s was acknowledged after its channel closed: its task was given back "
                    "at the close, and runs again",
                    delivery_tag,
                )

    def give_back(self, delivery_tag: str, seconds: int = 0, inherited: bool = True) -> None:
        """The message goes back to the queue in ``seconds`` (0: at once), by a lease change in a batch.

        ``inherited=False`` (the restore at a close) leaves alone the
        messages a parent process delivered: they are the parent's.
        """
        with self._lock:
            lease = self._settle_delivered(delivery_tag, inherited)
            if lease is not None:
                self._give_back(lease, seconds)

    def abandon(self, delivery_tag: str) -> None:
        """Stop keeping a delivered message's lease: its task comes back when the lease ends."""
        with self._lock:
            lease = self._settle_delivered(delivery_tag)
            if lease is not None:
                lease.state = State.LOST

    def _delete(self, lease: Lease) -> None:
        if lease.state is not State.LOST:
            lease.state = State.DELETING
        lease.settled_at = time.monotonic()
        self._deletes.append(lease)
        self._wake_settler(len(self._deletes))

    def _give_back(self, lease: Lease, seconds: int) -> None:
        if lease.state is State.LOST:
            return  # not ours: never touched again
        lease.state = State.RELEASING
        lease.new_lease_seconds = seconds
        lease.settled_at = time.monotonic()
        self._changes.append(lease)
        self._wake_settler(len(self._changes))

    def _wake_settler(self, pending: int) -> None:
        # The first one sets when the batch is due; a full batch is due now.
        if pending == 1 or pending >= self.settings.ack_batch_size:
            self._work_ready.notify_all()
        self._start_threads()

    def _start_threads(self) -> None:
        """Start the settler and the renewer, unless they run."""
        if self._stopped:
            return
        if self._settler is None or not self._settler.is_alive():
            self._settler = self._thread(self._settle_loop, "settler")
        if not self._closing and (self._renewer is None or not self._renewer.is_alive()):
            self._renewer = self._thread(self._renew_loop, "renewer")
        if self._at_exit is None:
            # A process that ends without closing its connection still
            # sends what is pending (multiprocessing runs this in its
            # children too, which is why it is registered here, late).
            self._at_exit = multiprocessing.util.Finalize(self, self.flush, exitpriority=0)

    def _thread(self, target: Callable[[], None], job: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"kombu-appengine-{job}-{self.name}", daemon=True)
        thread.start()
        return thread

    # -- giving back what will not be delivered --------------------------------

    def release_buffered(self, queue: str | None = None) -> int:
        """Give back the tasks buffered for ``queue`` (default: every queue), and those on their way.

        Returns how many buffered tasks are given back. The releases are
        sent by the next round of the settler; :meth:`flush` waits for it.
        """
        with self._lock:
            released = 0
            for name in [queue] if queue is not None else list(self._buffers):
                buffer = self._buffers.pop(name, None) or ()
                for lease in buffer:
                    self._give_back(lease, 0)
                released += len(buffer)
                # No one takes from the queue now: its next consumer starts
                # with a lease of one task again (see _room).
                self._windows.pop(name, None)
                request = self._requests.get(name)
                if request is not None:
                    request.fate = "release"
            return released

    def delete_buffered(self, queue: str) -> int:
        """Delete the tasks buffered for ``queue`` (a purge takes them, as never delivered).

        Waits for a lease of the queue on its way first, so that nothing it
        brings is delivered after the purge. Returns how many there were.
        """
        with self._lock:
            while queue in self._requests:
                self._requests[queue].fate = "delete"
                self._progress.wait()
            buffer = self._buffers.pop(queue, None) or ()
            for lease in buffer:
                self._delete(lease)
            return len(buffer)

    def buffered(self, queue: str) -> int:
        """How many tasks are buffered for ``queue``."""
        with self._lock:
            return len(self._buffers.get(queue, ()))

    # -- the settler and the renewer ----------------------------------------------

    def flush(self, deadline: float | None = None) -> bool:
        """Send every delete, release and lease change waiting for its batch now; wait for the answers.

        Failures are logged, not raised: what could not be sent is sent
        again by a later round (or comes back when its lease ends).
        Returns whether the round ended before ``deadline`` (a monotonic
        time; ``None`` waits for it).
        """
        with self._lock:
            if not (self._deletes or self._changes or self._rounds_started > self._rounds_done):
                return True
            target = self._rounds_started + 1
            self._forced = max(self._forced, target)
            self._start_threads()
            self._work_ready.notify_all()
            while self._rounds_done < target and self._settler is not None and self._settler.is_alive():
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                self._progress.wait(0.1)
            return True

    def _settle_loop(self) -> None:
        try:
            while True:
                with self._lock:
                    work = self._next_settling()
                    if work is None:
                        return
                failed = False
                try:
                    failed = self._settle(work)
                except Exception:  # keep settling: one bad round must not end the acks
                    logger.exception("the lease book's round of deletes and releases failed")
                with self._lock:
                    self._deletes_on_the_way = []
                    if failed:
                        self._settle_pause = time.monotonic() + self._retry_pause()
                    self._rounds_done += 1
                    self._progress.notify_all()
        finally:
            self.client.close_thread()

    def _next_settling(self) -> _Settling | None:
        """Wait (holding the lock only while waiting) for the settler's next round."""
        while True:
            now = time.monotonic()
            self._drop_ended(now)
            forced = self._forced > self._rounds_started
            if forced and any(lease.renewing for lease in self._changes):
                # A flush sends every change: wait for the renewal's new lease.
                self._work_ready.wait()
                continue
            paused = now < self._settle_pause and not forced
            urgent = forced or self._closing
            work = _Settling(
                deletes=self._take_due(self._deletes, now, urgent, paused),
                changes=self._take_due(self._changes, now, urgent, paused, after_renewals=True),
            )
            if forced or work.deletes or work.changes:
                self._rounds_started += 1
                self._deletes_on_the_way = list(work.deletes)
                return work
            if self._stopped:
                return None
            self._work_ready.wait(self._next_settling_due(now))

    def _renew_loop(self) -> None:
        try:
            while True:
                with self._lock:
                    renewals = self._next_renewals()
                    if renewals is None:
                        return
                    for lease in renewals:
                        lease.renewing = True
                failed = False
                try:
                    for (pull_queue, _), leases in _by_queue(renewals).items():
                        failed |= self._send_renewals(pull_queue, leases)
                except Exception:  # keep renewing: one bad round must not end renewals
                    logger.exception("the lease book's round of renewals failed")
                finally:
                    with self._lock:
                        for lease in renewals:
                            lease.renewing = False
                        if failed:
                            self._renew_pause = time.monotonic() + self._retry_pause()
                        self._work_ready.notify_all()
        finally:
            self.client.close_thread()

    def _next_renewals(self) -> list[Lease] | None:
        """Wait (holding the lock only while waiting) for leases to renew; ``None`` once closing."""
        while True:
            now = time.monotonic()
            self._drop_ended(now)
            if self._closing or self._stopped:
                return None
            renewals = [] if now < self._renew_pause else self._due_renewals(now)
            if renewals:
                return renewals
            self._work_ready.wait(self._next_renewal_due(now))

    def _retry_pause(self) -> float:
        return min(RETRY_PAUSE, self.settings.lease_secs / 4)

    def _drop_ended(self, now: float) -> None:
        """Leases certainly over (renewals failed until then) are lost; none is released."""
        for lease in [
            lease for lease in self._held() if lease.state is not State.LOST and lease.ends_by <= now
        ]:
            self._lose(lease, "it ran out before a renewal reached the service")
        ended = [lease for lease in self._changes if lease.ends_by <= now]
        for lease in ended:
            self._changes.remove(lease)
            lease.state = State.LOST

    def _take_due(
        self, pending: list[Lease], now: float, forced: bool, paused: bool, after_renewals: bool = False
    ) -> list[Lease]:
        """All of ``pending`` when its batch is due, else nothing.

        With ``after_renewals`` (lease changes), a lease whose renewal is on
        its way stays: a change sent now would name the lease the renewal
        replaces, and be refused. A delete takes no lease: it never waits.
        """
        ready = [lease for lease in pending if not (after_renewals and lease.renewing)]
        if not ready or paused:
            return []
        full = len(ready) >= self.settings.ack_batch_size
        old = now - ready[0].settled_at >= self.settings.ack_flush_interval
        # A settled lease whose renewal is due is sent now rather than renewed.
        ending = min(lease.expires for lease in ready) - now < self.settings.lease_secs / 2
        if forced or full or old or ending:
            pending[:] = [lease for lease in pending if after_renewals and lease.renewing]
            return ready
        return []

    def _held(self) -> Iterable[Lease]:
        """The leases to keep: buffered, delivered, and acknowledged until the service confirmed the delete.

        An acknowledged task whose delete waits (behind a slow call, or
        for its batch) must not go back to the queue meanwhile: another
        consumer would run it again.
        """
        seen: set[int] = set()  # a delete that failed is pending again, and still on the way
        for lease in itertools.chain(
            *self._buffers.values(), self._delivered.values(), self._deletes, self._deletes_on_the_way
        ):
            if id(lease) not in seen:
                seen.add(id(lease))
                yield lease

    def _due_renewals(self, now: float) -> list[Lease]:
        """The held leases to renew now: once one is at half its length, all past a quarter of it."""
        lease_secs = self.settings.lease_secs
        held = [lease for lease in self._held() if lease.state is not State.LOST]
        if not any(lease.expires - now < lease_secs / 2 for lease in held):
            return []
        return [lease for lease in held if lease.expires - now < lease_secs * 3 / 4]

    def _next_settling_due(self, now: float) -> float | None:
        """Seconds until the settler has something to do, if it knows."""
        times = []
        for pending in (self._deletes, self._changes):
            if pending:
                times.append(pending[0].settled_at + self.settings.ack_flush_interval)
                times.append(min(lease.expires for lease in pending) - self.settings.lease_secs / 2)
        if not times:
            return None
        return max(min(times), self._settle_pause) - now

    def _next_renewal_due(self, now: float) -> float | None:
        """Seconds until a held lease is due for renewal, if one is held."""
        lease_secs = self.settings.lease_secs
        times = [lease.expires - lease_secs / 2 for lease in self._held() if lease.state is not State.LOST]
        if not times:
            return None
        return max(min(times), self._renew_pause) - now

    def _settle(self, work: _Settling) -> bool:
        """One round's deletes and lease changes (the lock is not held); whether a call failed."""
        failed = False
        now = time.monotonic()
        checked = [lease for lease in work.deletes if lease.state is State.LOST or lease.expires <= now]
        sure = [lease for lease in work.deletes if lease not in checked]
        for (pull_queue, _), leases in _by_queue(sure).items():
            failed |= self._send_deletes(pull_queue, leases)
        for lease in checked:
            failed |= self._send_checked_delete(lease)
        for (pull_queue, seconds), leases in _by_queue(
            work.changes, key=lambda lease: lease.new_lease_seconds
        ).items():
            failed |= self._send_changes(pull_queue, leases, seconds)
        return failed

    def _send_deletes(self, pull_queue: str, leases: list[Lease]) -> bool:
        """Delete acknowledged tasks; whether some must be tried again."""
        try:
            outcomes = self.client.delete_many(pull_queue, [lease.task_id for lease in leases])
        except TaskQueueError as error:
            return self._retry_later(self._deletes, leases, "delete", pull_queue, error)
        again = [lease for lease in leases if self._failed(outcomes.get(lease.task_id))]
        if again:
            return self._retry_later(self._deletes, again, "delete", pull_queue, outcomes[again[0].task_id])
        return False

    def _send_checked_delete(self, lease: Lease) -> bool:
        """Delete an acknowledged task whose lease was lost, unless another consumer holds it now."""
        pull_queue = lease.route.pull_queue
        try:
            task = self.client.get_task(pull_queue, lease.task_id)
            leased = str(task.get("leaseTimestamp", "0"))
            if leased not in ("0", str(lease.lease_timestamp)):
                logger.info(
                    "task %s of queue %r was acknowledged after its lease was lost, and another consumer "
                    "holds it now: left to that consumer, which runs it again (at least once)",
                    lease.task_id,
                    pull_queue,
                )
                return False
            self.client.delete(pull_queue, lease.task_id)
        except TaskNotFound:
            pass
        except TaskQueueError as error:
            # Its lease is over: the task comes back whatever happens here.
            logger.warning(
                "could not delete acknowledged task %s of queue %r after its lease was lost (%s): "
                "it runs again (at least once)",
                lease.task_id,
                pull_queue,
                error,
            )
            return True
        return False

    def _send_changes(self, pull_queue: str, leases: list[Lease], seconds: int) -> bool:
        """Release (or postpone) leases; whether some must be tried again."""
        try:
            outcomes = self.client.change_leases(
                pull_queue, {lease.task_id: lease.lease_timestamp for lease in leases}, seconds
            )
        except TaskQueueError as error:
            return self._retry_later(self._changes, leases, "release", pull_queue, error)
        again = []
        with self._lock:
            for lease in leases:
                outcome = outcomes.get(lease.task_id)
                if isinstance(outcome, (LeaseLost, TaskNotFound)):
                    # Already back in the queue (its lease ran out) or gone.
                    lease.state = State.LOST
                elif self._failed(outcome):
                    again.append(lease)
        if again:
            return self._retry_later(self._changes, again, "release", pull_queue, outcomes[again[0].task_id])
        return False

    def _send_renewals(self, pull_queue: str, leases: list[Lease]) -> bool:
        """Renew held leases to ``lease_secs``; whether a call failed."""
        lease_secs = self.settings.lease_secs
        started = time.monotonic()
        try:
            outcomes = self.client.change_leases(
                pull_queue, {lease.task_id: lease.lease_timestamp for lease in leases}, lease_secs
            )
        except TaskQueueError as error:
            logger.warning(
                "could not renew %d leases on queue %r (%s); trying again soon",
                len(leases),
                pull_queue,
                error,
            )
            return True
        failed = False
        for lease in leases:
            if isinstance(outcomes.get(lease.task_id), LeaseLost):
                outcomes[lease.task_id] = self._renewed_after_all(lease, outcomes[lease.task_id])
        answered = time.monotonic()
        with self._lock:
            for lease in leases:
                outcome = outcomes.get(lease.task_id)
                if isinstance(outcome, dict):
                    lease.lease_timestamp = outcome.get("leaseTimestamp", lease.lease_timestamp)
                    lease.expires = started + lease_secs
                    lease.ends_by = answered + lease_secs
                elif isinstance(outcome, TaskNotFound) and lease.state is State.DELETING:
                    pass  # our own delete got there first
                elif isinstance(outcome, (LeaseLost, TaskNotFound)):
                    self._lose(lease, outcome)
                else:
                    failed = True
        return failed

    def _renewed_after_all(self, lease: Lease, refusal: LeaseLost) -> Any:
        """The task's resource if a refused renewal had in fact renewed our lease, else ``refusal``.

        A renewal whose answer was lost is sent again by the client's
        retries, naming the lease it has just replaced, and is refused. The
        lease is still ours, renewed, when no lease was granted since (its
        ``retry_count`` is the one we leased it with) and its lease is no
        longer the one we named (a lease that merely ran out keeps it).
        """
        try:
            task = self.client.get_task(lease.route.pull_queue, lease.task_id)
        except TaskQueueError:
            return refusal
        ours = str(task.get("retry_count")) == str(lease.task.get("retry_count"))
        if ours and str(task.get("leaseTimestamp", "0")) not in ("0", str(lease.lease_timestamp)):
            return task
        return refusal

    def _lose(self, lease: Lease, why: object) -> None:
        """The service says the lease is not ours: never touch it again."""
        was = lease.state
        lease.state = State.LOST
        if was is State.BUFFERED:
            buffer = self._buffers.get(lease.queue)
            if buffer is not None and lease in buffer:
                buffer.remove(lease)
        elif was is State.RELEASING and lease in self._changes:
            self._changes.remove(lease)
        log = logger.debug if was is State.BUFFERED else logger.warning
        log(
            "lost the lease on task %s of queue %r before it was renewed (%s): another consumer may get it",
            lease.task_id,
            lease.route.pull_queue,
            why,
        )

    @staticmethod
    def _failed(outcome: Any) -> bool:
        return isinstance(outcome, TaskQueueError) and not isinstance(outcome, TaskNotFound)

    def _retry_later(
        self, pending: list[Lease], leases: list[Lease], what: str, pull_queue: str, error: Any
    ) -> bool:
        """Put ``leases`` back in ``pending`` for a later round; always ``True`` (a call failed)."""
        logger.warning(
            "could not %s %d tasks of queue %r (%s); trying again soon", what, len(leases), pull_queue, error
        )
        with self._lock:
            pending[:0] = leases
        return True

    # -- closing ----------------------------------------------------------------

    def close(self) -> None:
        """Give back every buffered task, send everything pending, and stop the threads.

        Waits at most ``lease_secs`` for the service: by then every lease
        this book held has ended, and what was not sent no longer matters
        (those tasks come back; acknowledged ones run again). What could
        not be sent is logged.
        """
        with self._lock:
            if self._stopped:
                return
            self._closing = True
            self._work_ready.notify_all()
        if self._at_exit is not None:
            self._at_exit.cancel()
        deadline = time.monotonic() + self.settings.lease_secs
        self.release_buffered()
        leaser = self._leaser
        if leaser is not None and leaser is not threading.current_thread():
            leaser.join(max(0.0, deadline - time.monotonic()))
        answered = self.flush(deadline) and not (leaser is not None and leaser.is_alive())
        with self._lock:
            self._stopped = True
            if not answered:
                logger.warning(
                    "closing: the Task Queue API did not answer within lease_secs (%s s); "
                    "not waiting any longer",
                    self.settings.lease_secs,
                )
            left = {"delete": self._deletes + self._deletes_on_the_way, "release": self._changes}
            for what, pending in left.items():
                for (pull_queue, _), leases in _by_queue(pending).items():
                    logger.warning(
                        "could not %s %d tasks of queue %r: they come back when their leases end",
                        what,
                        len(leases),
                        pull_queue,
                    )
            self._deletes.clear()
            self._changes.clear()
            self._work_ready.notify_all()
        if answered:
            for thread in (self._settler, self._renewer):
                if thread is not None and thread is not threading.current_thread():
                    thread.join()

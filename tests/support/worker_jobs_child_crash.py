"""A task module whose FUNCTION cannot be looked up in pullqueue_worker's
processes: the lookup raises KeyboardInterrupt there, though not in the
supervisor (which looks it up first, to check it). Each process then dies
before it takes a task. (A module-level ``__getattr__``: a failing import
would not do, since forked processes inherit the supervisor's import.)"""

import multiprocessing


def _record(payload):
    """Never called: the processes die first."""


def __getattr__(name):
    if name == "record":
        if multiprocessing.current_process().name == "MainProcess":
            return _record
        raise KeyboardInterrupt("interrupted while looking FUNCTION up")
    raise AttributeError(name)

"""A local server speaking the App Engine Task Queue REST API (v1beta2).

Run it with ``pullqueue_emulator`` or ``python -m kombu_appengine.emulator``,
or in-process::

    from kombu_appengine.emulator import emulator

    with emulator(queues=["default"]) as url:
        ...  # url is "http://127.0.0.1:PORT"

:class:`Emulator` gives the running server's state too (``service``,
``tokens``, ``inject_failures``) for tests, and the server injects failures
on request over HTTP (``POST /retry_test``, see :mod:`.faults`).
"""

from ..rest.errors import ApiError
from .model import QueueConfig, TaskQueueService
from .queue_yaml import QueueYamlError, load_queue_yaml
from .server import Emulator, emulator
from .storage import CorruptJournal, DataDirInUse, StorageError

__all__ = [
    "ApiError",
    "CorruptJournal",
    "DataDirInUse",
    "Emulator",
    "QueueConfig",
    "QueueYamlError",
    "StorageError",
    "TaskQueueService",
    "emulator",
    "load_queue_yaml",
]

"""The gateway on this machine: App Engine's task queue stub behind the REST front.

:class:`LocalStub` installs the SDK's own task queue stub
(``google.appengine.api.taskqueue.taskqueue_stub``) as the process's task
queue service, as ``google.appengine.ext.testbed`` does, and hands it the
declared queues already parsed: the stub's own ``queue.yaml`` reader fails on
every call when a queue has a ``writer_email`` entry, so those entries are
kept apart (they become the gateway's producers) and never reach it.

:class:`LocalGateway` serves the gateway over HTTP on the emulator's
hardened server (one thread a connection); every call into the stub is
serialized by one lock, because the stub is not thread-safe.

The stub is process-wide (the bundled API reaches it through the global
``apiproxy_stub_map.apiproxy``): one local gateway per process at a time.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Callable

import yaml
from google.appengine.api import apiproxy_stub_map, queueinfo
from google.appengine.api.taskqueue import taskqueue_stub

from ..emulator.model import QueueConfig
from ..emulator.queue_yaml import queue_configs
from ..emulator.server import (
    DEFAULT_MAX_CONNECTIONS,
    IDLE_TIMEOUT,
    REQUEST_TIMEOUT,
    RestServer,
    check_project_option,
)
from ..rest.front import Authenticator
from . import MAX_REQUEST_BYTES
from .appengine import AppEngineBackend

#: The service name the bundled API calls.
SERVICE_NAME = "taskqueue"


def stub_queue_info(configs: Iterable[QueueConfig]) -> Any:
    """The stub's parsed ``queue.yaml`` (``queueinfo``) for ``configs``, without ``writer_email`` entries."""
    queues = []
    for config in configs:
        entry: dict[str, Any] = {"name": config.name, "mode": config.mode}
        if config.mode == "push":
            entry["rate"] = "5/s"
        if config.consumer_emails:
            entry["acl"] = [{"user_email": email} for email in config.consumer_emails]
        if config.max_leases is not None:
            entry["retry_parameters"] = {"task_retry_limit": config.max_leases}
        queues.append(entry)
    return queueinfo.LoadSingleQueue(yaml.safe_dump({"queue": queues}) if queues else "queue: []\n")


class LocalStub:
    """The SDK's task queue stub, installed as this process's task queue service.

    Parameters:
        configs: the declared queues.
        clock: the stub's clock (seconds since the epoch).
    """

    def __init__(self, configs: Iterable[QueueConfig] = (), clock: Callable[[], float] = time.time) -> None:
        self.configs: dict[str, QueueConfig] = {config.name: config for config in configs}
        self.stub = taskqueue_stub.TaskQueueServiceStub(gettime=clock)
        self._info = stub_queue_info(self.configs.values())
        # The stub's hook for a queue.yaml parsed elsewhere.
        self.stub.queue_yaml_parser = lambda root_path: self._info
        self.stub_map = apiproxy_stub_map.APIProxyStubMap()
        self.stub_map.RegisterStub(SERVICE_NAME, self.stub)
        self._previous: Any = None

    def declare_queue(self, config: QueueConfig) -> None:
        """Declare (or redeclare) a queue, as deploying an edited ``queue.yaml`` does."""
        self.configs[config.name] = config
        self._info = stub_queue_info(self.configs.values())

    def writers(self) -> dict[str, list[str]]:
        """Each queue's ``writer_email`` entries."""
        return {name: list(config.producer_emails) for name, config in self.configs.items()}

    def install(self) -> None:
        """Make the stub the task queue service the bundled API calls."""
        self._previous = apiproxy_stub_map.apiproxy
        apiproxy_stub_map.apiproxy = self.stub_map
        # The bundled API's Task reads the host it runs on; the SDK's testbed sets it too.
        os.environ.setdefault("HTTP_HOST", "localhost")

    def uninstall(self) -> None:
        """Give the process its previous service back."""
        if apiproxy_stub_map.apiproxy is self.stub_map:
            apiproxy_stub_map.apiproxy = self._previous
        self.stub.Shutdown()


class _LiveWriters(Mapping[str, list[str]]):
    """The ``writer_email`` entries of the stub's queues as they are now."""

    def __init__(self, stub: LocalStub) -> None:
        self._stub = stub

    def __getitem__(self, name: str) -> list[str]:
        return list(self._stub.configs[name].producer_emails)

    def __iter__(self) -> Any:
        return iter(self._stub.configs)

    def __len__(self) -> int:
        return len(self._stub.configs)


class LocalGateway(RestServer):
    """The gateway on the SDK's task queue stub, served over HTTP in a background thread.

    What ``pullqueue_gateway serve`` runs; tests use it as a second server
    beside the emulator, with the same interface (``url``, ``host``,
    ``service``, ``declare_queue``, ``inject_failures``, ``requests``).

    Request bodies are capped at :data:`~kombu_appengine.gateway.MAX_REQUEST_BYTES`, as deployed.

    Parameters:
        queues: queue names, or :class:`~kombu_appengine.emulator.QueueConfig` objects.
        queue_yaml: path of an App Engine ``queue.yaml`` to read queues from.
        project: the application id; a URL naming another is 404. ``None``: any.
        clock: the stub's clock, seconds since the epoch.
        authenticator: who may call (:class:`~kombu_appengine.gateway.auth.TokenInfoAuthenticator`);
            ``None`` asks for nothing, as the emulator does by default.
        identities: as the emulator's, when no ``authenticator`` is given
            (requests held to the ACLs by a static token to email map).
        host, port, max_connections, request_timeout, idle_timeout, latency: as the emulator takes them.
    """

    def __init__(
        self,
        queues: Iterable[str | QueueConfig] = (),
        queue_yaml: str | None = None,
        project: str | None = None,
        clock: Callable[[], float] = time.time,
        authenticator: Authenticator | None = None,
        require_auth: bool = False,
        accepted_tokens: Iterable[str] | None = None,
        identities: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        latency: float = 0.0,
    ) -> None:
        check_project_option(project)
        configs = queue_configs(queues, queue_yaml)
        self.local_stub = LocalStub(configs, clock)
        #: The backend, as the emulator's ``service``: the same interface.
        self.service = AppEngineBackend(
            project,
            clock=clock,
            lock=threading.RLock(),
            writers=_LiveWriters(self.local_stub),
            name_unnamed=True,
        )
        super().__init__(
            self.service,
            host,
            port,
            max_connections,
            request_timeout,
            idle_timeout,
            latency,
            require_auth=require_auth,
            accepted_tokens=accepted_tokens,
            identities=identities,
            authenticator=authenticator,
            max_body_bytes=MAX_REQUEST_BYTES,
        )
        self.local_stub.install()

    def declare_queue(self, name: str, **settings: Any) -> None:
        """Declare a pull queue at run time (what deploying an edited queue.yaml does)."""
        with self.service.lock:
            self.local_stub.declare_queue(QueueConfig(name, **settings))

    def stop(self) -> None:
        """Stop serving and give the process its previous task queue service back."""
        super().stop()
        self.local_stub.uninstall()

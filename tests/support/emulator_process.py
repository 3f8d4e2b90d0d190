"""A server in a child process (the emulator, ``python -m
kombu_appengine.emulator``, or the gateway, ``pullqueue_gateway serve``),
and JSON clients for any emulator: a keep-alive :class:`Client`, and
:func:`call` on a fresh connection each time."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from tests.support.helpers import b64
from tests.support.raw_http import Server

#: Seconds the emulator may take to print its listening line, or to exit without it.
START_DEADLINE = 30.0
#: Seconds a process may take to exit after a fatal error or a kill.
EXIT_DEADLINE = 10.0
#: Seconds any one request may take.
REQUEST_TIMEOUT = 10.0
#: The command of each kind of server (:data:`tests.support.servers.SERVER_KINDS`): arguments follow it.
COMMANDS = {
    "emulator": (sys.executable, "-m", "kombu_appengine.emulator"),
    "gateway": (sys.executable, "-m", "kombu_appengine.gateway.cli", "serve"),
}
#: What the emulator (and the gateway) prints on stdout once it accepts connections.
LISTENING_RE = re.compile(r"listening on http://(\[[0-9a-fA-F:.]+\]|[^:/\s\[\]]+):(\d+)\n\Z")


class EmulatorProcess:
    """``python -m kombu_appengine.emulator ARGS`` (or another ``command`` of
    :data:`COMMANDS`) in a child process, its stderr in a file; ``cwd`` and
    ``env`` as :class:`subprocess.Popen` takes them."""

    def __init__(
        self,
        args: list[str],
        stderr_path: pathlib.Path,
        cwd: pathlib.Path | None = None,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] = COMMANDS["emulator"],
    ) -> None:
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "wb")  # noqa: SIM115 - closed by kill()
        self.process = subprocess.Popen(
            [*command, *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
        )
        #: The listening line, once :meth:`wait_listening` read it.
        self.line = ""
        #: ``host:port`` from the listening line, as ``TASKQUEUE_EMULATOR_HOST`` takes it.
        self.host = ""
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def wait_listening(self) -> EmulatorProcess:
        """Read the listening line, within :data:`START_DEADLINE`."""
        data = self._read_stdout(lambda data: data.endswith(b"\n"))
        if not data.endswith(b"\n"):
            raise AssertionError(
                f"emulator exited ({self.process.wait(EXIT_DEADLINE)}) before listening; "
                f"stderr: {self.stderr()}"
            )
        self.line = data.decode()
        match = LISTENING_RE.match(self.line)
        assert match, f"no listening line ({self.line!r}); stderr: {self.stderr()}"
        self.port = int(match.group(2))
        self.host = f"{match.group(1)}:{self.port}"
        return self

    def wait_refused(self) -> int:
        """The exit status of an emulator that must not start: it exits
        without printing anything on stdout."""
        out = self._read_stdout(bool)
        assert not out, f"the emulator started: {out!r}"
        return self.process.wait(START_DEADLINE)

    def _read_stdout(self, until: Callable[[bytes], bool]) -> bytes:
        """Stdout until ``until`` says so or it closes, within :data:`START_DEADLINE`."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + START_DEADLINE
        data = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while not until(data):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"emulator neither listening nor gone within {START_DEADLINE}s; "
                        f"stdout: {data!r}; stderr: {self.stderr()}"
                    )
                if selector.select(remaining):
                    chunk = os.read(fd, 1024)
                    if not chunk:
                        break
                    data += chunk
        return data

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def client(self) -> Client:
        assert self.host.rsplit(":", 1)[0] in ("127.0.0.1", "localhost", "[::1]"), (
            "send traffic to loopback only"
        )
        return Client(self.host)

    def call(self, method: str, path: str, document: Any = None) -> tuple[int, Any]:
        """:func:`call` to this emulator."""
        return call(self, method, path, document)

    def insert(self, name: str, queue: str = "default", payload: bytes = b"") -> tuple[int, Any]:
        return self.call("POST", tasks_path(queue), {"id": name, "payloadBase64": b64(payload)})

    def get(self, name: str, queue: str = "default") -> tuple[int, Any]:
        return self.call("GET", f"{tasks_path(queue)}/{name}")

    def lease(self, queue: str = "default", num_tasks: int = 1, lease_secs: int = 600) -> tuple[int, Any]:
        return self.call("POST", f"{tasks_path(queue)}/lease?numTasks={num_tasks}&leaseSecs={lease_secs}")

    def listed(self, queue: str = "default") -> set[str]:
        """The names of the queue's tasks."""
        status, listed = self.call("GET", tasks_path(queue))
        assert status == 200, listed
        return {task["id"] for task in listed["items"]}

    def stop(self) -> str:
        """SIGTERM, wait for the exit, and give everything the process wrote
        (stdout after the listening line, then stderr)."""
        self.process.terminate()
        assert self.process.stdout is not None
        out = self.process.stdout.read().decode("utf-8", errors="replace")
        self.process.wait(EXIT_DEADLINE)
        return out + self.stderr()

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(EXIT_DEADLINE)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


#: The type of the ``spawn`` fixture: emulator arguments in, a process out.
Spawn = Callable[..., EmulatorProcess]


class Client:
    """One keep-alive connection speaking JSON to ``host`` (``host:port``)."""

    def __init__(self, host: str, timeout: float = REQUEST_TIMEOUT) -> None:
        self.connection = http.client.HTTPConnection(host, timeout=timeout)

    def call(self, method: str, path: str, document: Any = None) -> tuple[int, Any]:
        """Status and decoded JSON answer (``None`` for an empty body); ``document`` as JSON."""
        return _json_exchange(self.connection, method, path, document)

    def close(self) -> None:
        self.connection.close()


def call(server: Server, method: str, path: str, document: Any = None) -> tuple[int, Any]:
    """One request on a fresh connection, as :meth:`Client.call`; a connection
    that fails is an :class:`AssertionError` naming the request."""
    connection = http.client.HTTPConnection(server.host, timeout=REQUEST_TIMEOUT)
    try:
        return _json_exchange(connection, method, path, document)
    except (OSError, http.client.HTTPException) as exc:
        raise AssertionError(f"{method} {path[:120]}: no answer ({exc!r})") from None
    finally:
        connection.close()


def _json_exchange(
    connection: http.client.HTTPConnection, method: str, path: str, document: Any
) -> tuple[int, Any]:
    body = None if document is None else json.dumps(document).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    return response.status, (json.loads(data) if data else None)


def tasks_path(queue_name: str = "default", project: str = "demo") -> str:
    return f"/taskqueue/v1beta2/projects/{project}/taskqueues/{queue_name}/tasks"

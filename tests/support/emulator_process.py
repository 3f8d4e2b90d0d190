"""The emulator in a child process (``python -m kombu_appengine.emulator``),
and a keep-alive JSON client for it."""

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
from typing import Any

#: Seconds the emulator may take to print its listening line.
START_DEADLINE = 20.0
#: Seconds a process may take to exit after a fatal error or a kill.
EXIT_DEADLINE = 10.0
#: Seconds any one request may take.
REQUEST_TIMEOUT = 10.0
#: What the emulator prints on stdout once it accepts connections.
LISTENING_RE = re.compile(r"listening on http://([^:/\s]+):(\d+)\n\Z")


class EmulatorProcess:
    """``python -m kombu_appengine.emulator`` in a child process."""

    def __init__(self, args: list[str], stderr_path: pathlib.Path) -> None:
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "wb")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kombu_appengine.emulator", *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
        )
        self.line = ""
        self.host = ""
        self.port = 0

    def wait_listening(self) -> EmulatorProcess:
        """Read the first stdout line, within :data:`START_DEADLINE`."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + START_DEADLINE
        data = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while not data.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no listening line within {START_DEADLINE}s; stderr: {self.stderr()}"
                    )
                if selector.select(remaining):
                    chunk = os.read(fd, 1024)
                    if not chunk:
                        raise AssertionError(
                            f"emulator exited ({self.process.wait(EXIT_DEADLINE)}) before listening; "
                            f"stderr: {self.stderr()}"
                        )
                    data += chunk
        self.line = data.decode()
        match = LISTENING_RE.match(self.line)
        assert match, self.line
        self.host, self.port = match.group(1), int(match.group(2))
        return self

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def client(self) -> Client:
        assert self.host in ("127.0.0.1", "localhost"), "send traffic to loopback only"
        return Client(self.host, self.port)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(EXIT_DEADLINE)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def wait_exit(self) -> int:
        return self.process.wait(EXIT_DEADLINE)


class Client:
    """One keep-alive connection speaking JSON."""

    def __init__(self, host: str, port: int) -> None:
        self.connection = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)

    def call(self, method: str, path: str, document: Any = None) -> tuple[int, Any]:
        body = None if document is None else json.dumps(document).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else None)

    def close(self) -> None:
        self.connection.close()


def tasks_path(queue_name: str = "default", project: str = "demo") -> str:
    return f"/taskqueue/v1beta2/projects/{project}/taskqueues/{queue_name}/tasks"

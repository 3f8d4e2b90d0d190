"""The two servers of the REST API the suites run against: the emulator, and
the gateway on App Engine's task queue stub. Both have the same interface
(``url``, ``host``, ``service``, ``declare_queue``, ``inject_failures``,
``requests``, ``tokens``)."""

from __future__ import annotations

from typing import Any

from kombu_appengine.emulator import Emulator
from kombu_appengine.emulator.server import RestServer

#: The kinds of server, as fixture parameters.
SERVER_KINDS = ("emulator", "gateway")


def start_server(kind: str, **options: Any) -> RestServer:
    """A server of ``kind`` with ``options`` (the emulator's, where the gateway has them), started."""
    if kind == "gateway":
        from kombu_appengine.gateway.local import LocalGateway

        return LocalGateway(**options).start()
    return Emulator(**options).start()


def parametrize_servers(metafunc: Any, tests: frozenset[str]) -> None:
    """Run the tests named in ``tests`` against both servers: they take the
    ``server_kind`` fixture (``"emulator"`` for every other test)."""
    if (
        "server_kind" in metafunc.fixturenames
        and metafunc.definition.originalname in tests
        and metafunc.definition.get_closest_marker("emulator_only") is None
    ):
        metafunc.parametrize("server_kind", SERVER_KINDS)
